"""evaluate and its companions, against a manual count: accuracy, flip TTA, confusion pairs,
mistakes by loss."""


import pytest
import torch
from torch import nn

from resnet_edu.data import ImageSet, normalize
from resnet_edu.evaluation import evaluate

from helpers import tiny_model


def test_evaluate_matches_a_manual_count_and_tta_is_flip_invariant(sample):
    model = tiny_model().eval()
    data = sample.test.subset(slice(0, 300))
    result = evaluate(model, data, tta=True, batch_size=128)
    with torch.no_grad():
        logits = model(normalize(data.images))
        flipped = model(normalize(data.images.flip(-1)))
    assert result["acc"] == pytest.approx((logits.argmax(1) == data.labels).float().mean().item())
    assert result["loss"] == pytest.approx(
        nn.functional.cross_entropy(logits, data.labels).item(), rel=1e-5)
    mirrored = evaluate(model, ImageSet(data.images.flip(-1), data.labels), tta=True)
    assert mirrored["acc_tta"] == pytest.approx(result["acc_tta"])  # TTA sees both views
    assert mirrored["acc"] == pytest.approx(
        (flipped.argmax(1) == data.labels).float().mean().item())


def test_confusion_pairs_and_mistakes_by_loss():
    from resnet_edu.evaluation import most_confident_mistakes, top_confusions

    matrix = torch.tensor([[5, 3, 0], [4, 6, 1], [0, 2, 9]])
    assert top_confusions(matrix, k=2) == [(0, 1, 7), (1, 2, 3)]
    probs = torch.tensor([[0.1, 0.8, 0.1],    # wrong, confident, true class at 0.1
                          [0.5, 0.45, 0.05],  # wrong, less confident, true class at 0.05
                          [0.9, 0.05, 0.05]])  # right
    labels = torch.tensor([0, 2, 0])
    assert most_confident_mistakes(probs, labels).tolist() == [0, 1]
    assert most_confident_mistakes(probs, labels, by="loss").tolist() == [1, 0]
