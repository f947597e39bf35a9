"""Plots for the gradient-flow and degradation notebooks.

`plot_norms_vs_depth` puts several nets' per-layer gradient norms on one log-scale axis
(the scale of a gradient varies over orders of magnitude, so only a log axis shows it);
`plot_training_curves` draws train and test error per epoch in the style of He et al. 2015,
Fig. 1 and Fig. 6: thin dashed lines for training error, bold lines for test error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .gradients import WEIGHT, GradientNorms

if TYPE_CHECKING:  # matplotlib loads on the first plot, as in the other modules
    from matplotlib.axes import Axes

# one colour per net, the same in every figure: plain nets red, residual nets blue, darker
# for deeper. The shade comes from the depth in the net's name ("plain-56", "ResNet-110").
_DEPTHS = (20, 32, 44, 56, 110)
_PLAIN = ("#f4a582", "#e58368", "#d6604d", "#a50f15", "#67001f")
_RESIDUAL = ("#92c5de", "#6baed6", "#4393c3", "#2166ac", "#053061")


def net_color(name: str, rank: int | None = None) -> str:
    """The colour of net `name`: red shades for 'plain...', blue otherwise; the shade is set
    by the depth in the name (20, 32, 44, 56, 110: light to dark), so a net has the same
    colour in every figure. `rank` (0 = shallowest) only for names without a known depth."""
    palette = _PLAIN if name.lower().startswith("plain") else _RESIDUAL
    found = re.search(r"(\d+)", name)
    depth = int(found.group(1)) if found else None
    if depth in _DEPTHS:
        return palette[_DEPTHS.index(depth)]
    return palette[min(rank or 0, len(palette) - 1)]


def _colors(names: Sequence[str]) -> dict[str, str]:
    """Colours for the nets, by name; nets without a known depth ranked in the order given."""
    ranks = {"plain": 0, "residual": 0}
    out = {}
    for name in names:
        family = "plain" if name.lower().startswith("plain") else "residual"
        out[name] = net_color(name, 2 * ranks[family])
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
    what = r"$\|\partial E/\partial W\|_F$" if kind == WEIGHT else r"$\|\partial E/\partial y\|_F$"
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

