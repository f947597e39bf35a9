"""Training curves: drawn live in a notebook while `fit` runs, and as a static figure after.

    live = LiveCurves()                            # one figure, redrawn after every epoch
    history = fit(model, data, config, callbacks=[live])
    plot_history(history)                          # the final static figure: loss, accuracy
    plot_training_curves({"ResNet-20": history, "plain-20": other})   # error, several nets

`plot_training_curves` draws train and test error per epoch for several nets in the style of
He et al. 2015, Fig. 1 and Fig. 6 (thin dashed: training error, bold: test error), from a
`History` or from stored per-epoch curves (a degradation results file's "nets" entry).

`LiveCurves` redraws only when a notebook front end can show it (JupyterLab, Colab); under
nbval/nbconvert (static mode) or in a terminal it stays quiet, and the notebook draws the
final curves with `plot_history` instead. It redraws at most every `every_s` seconds (and
after the run's last epoch): each redraw is a message of an image to the front end, and a
client that reads a cell's messages only once the cell has finished (nbval) loses those
beyond ZeroMQ's high-water mark of 1,000 queued messages, the cell's "idle" status with them,
and then fails the cell ("Timeout of 5 seconds exceeded waiting for output"). At one redraw
per epoch, a run of 500 short epochs sent more than that; a redraw takes a few tenths of a
second too, which a budgeted run pays out of its training time.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .gradients import net_colors
from .notebook import live_widgets
from .runs import History


def smoothed_loss_floor(label_smoothing: float, classes: int = 10) -> float:
    """The smallest cross-entropy a model can reach against label-smoothed targets: the
    entropy of the target, (1 - eps + eps/K) on the true class and eps/K on each other one.
    0.867 nats for eps = 0.2 and K = 10; 0 without smoothing."""
    if label_smoothing <= 0:
        return 0.0
    true, other = 1 - label_smoothing + label_smoothing / classes, label_smoothing / classes
    return -(true * math.log(true) + (classes - 1) * other * math.log(other))


def plot_history(history: History, axes: Any = None, title: str | None = None,
                 splits: Sequence[str] = ("train", "val", "test"), data: str = "",
                 classes: int = 10) -> Any:
    """Loss (left) and accuracy (right) per epoch for each of `splits` the history holds.

    `data` names the data set in the title (e.g. `resnet_edu.data.data_label(data)`). The
    training loss of a run with label smoothing is measured against the smoothed targets, the
    other splits' against the true labels, so its floor (`smoothed_loss_floor`) is drawn."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    else:
        fig = axes[0].figure
    epochs = history.column("epoch")
    styles = {"train": "-", "val": "--", "test": ":"}
    for split, style in styles.items():
        if split not in splits:
            continue
        if history.column(f"{split}_loss"):
            axes[0].plot(epochs, history.column(f"{split}_loss"), style, marker="o",
                         label=split)
            axes[1].plot(epochs, [100 * a for a in history.column(f"{split}_acc")], style,
                         marker="o", label=split)
        if history.column(f"{split}_acc_tta"):
            axes[1].plot(epochs, [100 * a for a in history.column(f"{split}_acc_tta")],
                         style, marker="x", alpha=0.6, label=f"{split} (flip TTA)")
    smoothing = history.config.get("label_smoothing", 0.0) or 0.0
    if "train" in splits and smoothing > 0 and history.column("train_loss"):
        axes[0].axhline(smoothed_loss_floor(smoothing, classes), color="grey", ls="-.", lw=1,
                        label=f"train loss floor (label smoothing {smoothing:g})")
    axes[0].set(xlabel="epoch", ylabel="cross-entropy loss (nats)", title="Loss")
    axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    name = history.config.get("name", "")
    on = f", {data}" if data else ""
    fig.suptitle(title or f"Training curves (preset '{name}'{on})")
    fig.tight_layout()
    return fig


def error_curves(history: History) -> dict[str, list[float]]:
    """A run's per-epoch 'train_error' and 'test_error' (1 - accuracy; the validation split
    stands in for test when the run did not evaluate on test every epoch)."""
    test = history.column("test_acc") or history.column("val_acc")
    return {"train_error": [1 - a for a in history.column("train_acc")],
            "test_error": [1 - a for a in test]}


def plot_training_curves(curves: Mapping[str, Mapping[str, Any] | History],
                         ax: Any = None, title: str | None = None,
                         percent: bool = True, chance: float | None = None) -> Any:
    """Train (dashed) and held-out (bold) error vs epoch for each net.

    `curves[name]` is a `History`, or per-epoch fractions (epoch 1 first) under 'train_error'
    and/or 'test_error' or 'val_error', e.g. the "nets" entry of a results file. A single
    number under 'test_error' (a test measured once, at the end) is drawn as a marker at the
    last epoch. `chance` (a fraction, 0.9 for ten classes) draws the error of guessing.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not curves:
        raise ValueError("expected at least one net's curves, got none")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    colors = net_colors(list(curves))
    scale = 100 if percent else 1
    for name, c in curves.items():
        if isinstance(c, History):
            c = error_curves(c)
        if not {"train_error", "test_error", "val_error"} & set(c):
            raise ValueError(f"curves[{name!r}] needs 'train_error', 'val_error' or "
                             f"'test_error', got keys {sorted(c)}")
        epochs = 0
        for key, style, width, suffix in (("train_error", "--", 1.2, "train"),
                                          ("val_error", "-", 2.4, "val"),
                                          ("test_error", "-", 2.4, "test")):
            if key in c and not isinstance(c[key], numbers.Real):  # one value per epoch
                values = [scale * float(v) for v in c[key]]
                epochs = max(epochs, len(values))
                ax.plot(range(1, len(values) + 1), values, style, linewidth=width,
                        color=colors[name], label=f"{name} {suffix}")
        if isinstance(c.get("test_error"), numbers.Real):  # measured once, after training
            ax.plot([epochs or 1], [scale * c["test_error"]], marker="*", markersize=11,
                    linestyle="none", color=colors[name], markeredgecolor="k",
                    label=f"{name} test (end)")
    if chance is not None:
        ax.axhline(scale * chance, color="0.5", linestyle=":", linewidth=1,
                   label=f"chance ({scale * chance:g}{' %' if percent else ''})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel("error (%)" if percent else "error (fraction)")
    ax.set_title(title or "Training curves (dashed: train, bold: held-out)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax


class LiveCurves:
    """A `fit` callback that redraws the curves in a live notebook after an epoch: at most
    every `every_s` seconds, and always after the first and the run's last epoch."""

    def __init__(self, enabled: bool | None = None, data: str = "",
                 every_s: float = 10.0) -> None:
        self.enabled = live_widgets() if enabled is None else enabled
        self.data = data  # the data set's name for the title, as in `plot_history`
        self.every_s = every_s
        self.redraws = 0
        self._handle: Any = None
        self._last = -math.inf

    def due(self, history: History) -> bool:
        """Whether the figure is redrawn after the epoch `history` ends with."""
        last_epoch = len(history.epochs) >= history.config.get("epochs", math.inf)
        return (self._handle is None or last_epoch
                or time.perf_counter() - self._last >= self.every_s)

    def __call__(self, history: History) -> None:
        if not self.enabled or not self.due(history):
            return
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = plot_history(history, data=self.data)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)  # shown through the display handle, not again at the cell's end
        self._last = time.perf_counter()
        self.redraws += 1
