"""Looking at a trained classifier: its loss and accuracy, predictions, confusion matrix,
per-class accuracy, worst mistakes.

`evaluate` gives loss and accuracy (optionally with test-time flips), `predict` the class
probabilities the other numbers come from; each has a plot for the notebook. Plus the two
pictures of the data itself: an image grid and the class balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def plot_confusion_matrix(matrix: torch.Tensor, classes: Sequence[str] = CLASSES,
                          title: str = "Confusion matrix") -> Any:
    """The matrix as row-normalized percentages (each row: where that class's images went)."""
    import matplotlib.pyplot as plt

    share = 100 * matrix.double() / matrix.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=100)
    for i in range(len(classes)):
        for j in range(len(classes)):
            v = share[i, j].item()
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if v > 50 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(im, ax=ax, label="share of the true class's images (%)")
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(accuracy: torch.Tensor, classes: Sequence[str] = CLASSES,
                            title: str = "Per-class accuracy") -> Any:
    """Horizontal bars, one per class, with the mean as a dashed line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    values = (100 * accuracy).tolist()
    ax.barh(list(classes), values, color="tab:blue", label="class accuracy")
    mean = sum(values) / len(values)
    ax.axvline(mean, color="k", linestyle="--", label=f"mean {mean:.1f}%")
    ax.set(xlabel="accuracy (%)", ylabel="class", title=title, xlim=(0, 100))
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below, off the bars
    fig.tight_layout()
    return fig


def plot_images(data: ImageSet, indices: Sequence[int] | torch.Tensor, ncols: int = 8,
                captions: Sequence[str] | None = None, title: str = "") -> Any:
    """A grid of images (uint8, as stored) with a caption under each."""
    import matplotlib.pyplot as plt

    indices = [int(i) for i in indices]
    nrows = max(1, -(-len(indices) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 2.2 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, (ax, i) in enumerate(zip(axes.flat, indices, strict=False)):
        ax.imshow(data.images[i].permute(1, 2, 0).numpy())  # (32, 32, 3) for imshow
        caption = captions[n] if captions is not None else CLASSES[int(data.labels[i])]
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_mistakes(data: ImageSet, probs: torch.Tensor, indices: torch.Tensor,
                  ncols: int = 8, title: str | None = None) -> Any:
    """The given mistakes with 'predicted (confidence) / true (its probability)' captions."""
    confidence, predicted = probs.max(1)
    captions = [f"{CLASSES[predicted[i]]} {100 * confidence[i]:.0f}%\n"
                f"(true: {CLASSES[data.labels[i]]} {100 * probs[i, data.labels[i]]:.0f}%)"
                for i in indices.tolist()]
    return plot_images(data, indices, ncols, captions,
                       title=title or "Mistakes: predicted class (probability), "
                                      "true class (probability)")


def plot_class_balance(sets: dict[str, ImageSet], classes: Sequence[str] = CLASSES) -> Any:
    """Images per class in each split, as grouped bars."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / max(1, len(sets))
    for k, (name, s) in enumerate(sets.items()):
        counts = torch.bincount(s.labels, minlength=len(classes)).tolist()
        ax.bar([i + k * width for i in range(len(classes))], counts, width, label=name)
    ax.set_xticks([i + width * (len(sets) - 1) / 2 for i in range(len(classes))], classes,
                  rotation=30, ha="right")
    ax.set(xlabel="class", ylabel="images", title="Class balance per split")
    ax.set_ylim(0, 1.3 * max(int(torch.bincount(s.labels).max()) for s in sets.values()))
    ax.legend(loc="upper center", ncol=len(sets))
    fig.tight_layout()
    return fig
