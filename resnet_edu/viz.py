"""Plots for the gradient-flow and degradation notebooks.

`plot_norms_vs_depth` puts several nets' per-layer gradient norms on one log-scale axis
(the scale of a gradient varies over orders of magnitude, so only a log axis shows it);
`plot_training_curves` draws train and test error per epoch in the style of He et al. 2015,
Fig. 1 and Fig. 6: thin dashed lines for training error, bold lines for test error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .gradients import WEIGHT, GradientNorms

if TYPE_CHECKING:  # matplotlib loads on the first plot, as in the other modules
    from matplotlib.axes import Axes

# one colour per family, darker for deeper: plain nets red, residual nets blue
_PLAIN = ("#f4a582", "#d6604d", "#67001f")
_RESIDUAL = ("#92c5de", "#4393c3", "#053061")


def net_color(name: str, rank: int) -> str:
    """A colour for net `name` (red shades for 'plain...', blue otherwise), `rank` 0 = shallow."""
    palette = _PLAIN if name.lower().startswith("plain") else _RESIDUAL
    return palette[min(rank, len(palette) - 1)]


def _colors(names: Sequence[str]) -> dict[str, str]:
    """Rank plain and residual nets separately, in the order given."""
    ranks = {"plain": 0, "residual": 0}
    out = {}
    for name in names:
        family = "plain" if name.lower().startswith("plain") else "residual"
        out[name] = net_color(name, ranks[family])
        ranks[family] += 1
    return out


def plot_norms_vs_depth(tables: Mapping[str, GradientNorms], kind: str = WEIGHT,
                        ax: Axes | None = None, title: str | None = None) -> Axes:
    """Per-layer gradient norm against depth (layer 1 = input side), one line per net.

    Norms that are exactly 0 (float32 underflow) cannot sit on a log axis: they are left
    out and the legend says so.
    """
    import matplotlib.pyplot as plt

    if not tables:
        raise ValueError("expected at least one net's GradientNorms, got none")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    colors = _colors(list(tables))
    for name, table in tables.items():
        rows = table.of_kind(kind)
        depth = [r.depth for r in rows if r.norm > 0]
        norm = [r.norm for r in rows if r.norm > 0]
        zeros = len(rows) - len(norm)
        label = name + (f" ({zeros} of {len(rows)} are 0: underflow)" if zeros else "")
        (line,) = ax.plot(depth, norm, marker=".", markersize=4, linewidth=1.5,
                          color=colors[name], label=label)
        if not norm:  # nothing to draw: keep the legend entry visible
            line.set_linestyle(":")
    ax.set_yscale("log")
    what = r"$\|\partial L/\partial W\|_2$" if kind == WEIGHT else r"$\|\partial L/\partial y\|_2$"
    unit = "conv/fc layer" if kind == WEIGHT else "block"
    ax.set_xlabel(f"depth ({unit} index, 1 = next to the input)")
    ax.set_ylabel(f"gradient norm {what} (log scale)")
    ax.set_title(title or f"Per-{unit.split('/')[-1]} gradient norm vs depth")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax


def plot_training_curves(curves: Mapping[str, Mapping[str, Sequence[float]]],
                         ax: Axes | None = None, title: str | None = None,
                         percent: bool = True) -> Axes:
    """Train (dashed) and test (bold) error vs epoch for each net.

    `curves[name]` holds per-epoch fractions under 'train_error' and/or 'test_error'
    (epoch 1 first), e.g. the "nets" entry of a degradation results file.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not curves:
        raise ValueError("expected at least one net's curves, got none")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    colors = _colors(list(curves))
    scale = 100 if percent else 1
    for name, c in curves.items():
        missing = {"train_error", "test_error"} - set(c)
        if len(missing) == 2:
            raise ValueError(f"curves[{name!r}] needs 'train_error' or 'test_error', "
                             f"got keys {sorted(c)}")
        for key, style, width, suffix in (("train_error", "--", 1.2, "train"),
                                          ("test_error", "-", 2.4, "test")):
            if key in c:
                values = [scale * v for v in c[key]]
                ax.plot(range(1, len(values) + 1), values, style, linewidth=width,
                        color=colors[name], label=f"{name} {suffix}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel("error (%)" if percent else "error (fraction)")
    ax.set_title(title or "Training curves (dashed: train, bold: test)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax

