"""Looking at a trained classifier: its loss and accuracy, predictions, confusion matrix,
per-class accuracy, worst mistakes.

`evaluate` gives loss and accuracy (optionally with test-time flips), `predict` the class
probabilities the other numbers come from. Their figures, and the two pictures of the data
itself (an image grid, the class balance), are in `resnet_edu.plots`.
"""

from __future__ import annotations

import torch
from torch import nn

from .augment import DeviceLoader
from .data import CLASSES, ImageSet
from .modes import mode
from .precision import autocast, resolve_amp


@torch.no_grad()
def predict(model: nn.Module, data: ImageSet, *, device: torch.device | None = None,
            batch_size: int = 1024, tta: bool = False, channels_last: bool = False,
            amp: str = "off") -> torch.Tensor:
    """Class probabilities (N, classes) on the CPU; with `tta`, the mean of the image's and
    its mirror image's probabilities (test-time flip augmentation)."""
    device = device or next(model.parameters()).device
    dtype = resolve_amp(amp, device)
    out = []
    loader = DeviceLoader(data, batch_size, train=False, device=device,
                          channels_last=channels_last)
    with mode(model, train=False):
        for x, _ in loader:  # x: (B, 3, 32, 32)
            with autocast(device, dtype):
                p = model(x).float().softmax(1)  # (B, classes)
                if tta:
                    p = (p + model(x.flip(3)).float().softmax(1)) / 2
            out.append(p.cpu())
    return torch.cat(out)


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, *, device: torch.device | None = None,
             batch_size: int = 1024, tta: bool = False, channels_last: bool = False,
             amp: str = "off") -> dict[str, float]:
    """Cross-entropy and accuracy on `data`; with `tta`, also `acc_tta` (flip TTA)."""
    device = device or next(model.parameters()).device
    dtype = resolve_amp(amp, device)
    loss = correct = correct_tta = 0.0
    loader = DeviceLoader(data, batch_size, train=False, device=device,
                          channels_last=channels_last)
    with mode(model, train=False):
        for x, y in loader:  # x: (B, 3, 32, 32), y: (B,)
            with autocast(device, dtype):
                logits = model(x).float()  # (B, classes)
                loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                if tta:
                    p = logits.softmax(1) + model(x.flip(3)).float().softmax(1)
                    correct_tta += (p.argmax(1) == y).sum().item()
    n = max(1, len(data))
    result = {"loss": loss / n, "acc": correct / n}
    if tta:
        result["acc_tta"] = correct_tta / n
    return result


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor,
                     num_classes: int = len(CLASSES)) -> torch.Tensor:
    """(classes, classes) int64 counts: row = true class, column = predicted class."""
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(f"expected predictions and labels of the same shape (N,), got "
                         f"{tuple(predictions.shape)} and {tuple(labels.shape)}")
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes ** 2).view(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Recall of each class: the diagonal over the row sums (nan for an absent class)."""
    return matrix.diag().double() / matrix.sum(1).double()


def most_confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, k: int = 16,
                            by: str = "confidence") -> torch.Tensor:
    """Indices of the k worst wrong predictions: `by="confidence"`, the highest probability
    given to the (wrong) predicted class; `by="loss"`, the lowest probability given to the
    true class (the largest cross-entropy). Ranked by loss, the images on which the model was
    most wrong about the truth come first, whatever it predicted instead. (Label smoothing
    moves the *training* optimum of the true class's probability to 1 - eps + eps/K; it caps
    nothing on unseen images.)"""
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"expected probs (N, classes) and labels (N,), got "
                         f"{tuple(probs.shape)} and {tuple(labels.shape)}")
    if by not in ("confidence", "loss"):
        raise ValueError(f"by must be 'confidence' or 'loss', got {by!r}")
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    if by == "loss":
        score = -probs[wrong, labels[wrong]].clamp_min(1e-12).log()  # -log p(true class)
    else:
        score = confidence[wrong]
    order = score.argsort(descending=True)
    return wrong[order[:k]]


def top_confusions(matrix: torch.Tensor, k: int = 4) -> list[tuple[int, int, int]]:
    """The k pairs of classes confused most often, in either direction: (a, b, count) with
    count = matrix[a, b] + matrix[b, a] (row = true class), largest first."""
    n = len(matrix)
    pairs = [(a, b, int(matrix[a, b] + matrix[b, a])) for a in range(n) for b in range(a + 1, n)]
    return sorted(pairs, key=lambda t: -t[2])[:k]
