"""Every figure of the series, and the one palette they share.

Each function draws what an analysis module measured; none measures anything itself, apart
from the few that take a config and run it (`plot_gains_vs_depth`, `draw_block_shapes`):

- the palette: `net_color(name)`: plain nets red, residual nets blue, darker for deeper, so a
  net has the same colour in every figure;
- training curves (`resnet_edu.runs.History`, stored results): `plot_history`,
  `plot_training_curves` (He et al. 2015, Fig. 1 and 6: dashed train, bold held-out error);
- a trained classifier (`resnet_edu.evaluation`): `plot_confusion_matrix`,
  `plot_per_class_accuracy`, `plot_images`, `plot_mistakes`, `plot_class_balance`;
- gradient norms (`resnet_edu.gradients`): `plot_norms_vs_depth`;
- a linear stack's gain (`resnet_edu.stacks`): `plot_gains_vs_depth`;
- a block's shapes (`resnet_edu.shapes`): `draw_block_shapes`;
- loss landscapes (`resnet_edu.landscape`): `plot_lines`, `plot_contours`,
  `plot_hessian_ratios`.

Each returns the figure or the axes it drew on, and draws into `ax=` when given one.
"""

from __future__ import annotations

import numbers
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from .data import CLASSES, ImageSet
from .gradients import WEIGHT, GradientNorms
from .pretrained import DISPLAY_NAMES
from .recipe import smoothed_loss_floor
from .runs import History
from .shapes import BlockSpec, Shape, block_shapes, conv_output_size
from .stacks import LinearStack, expected_rms_gain, jacobian_gains

# --- the palette ---------------------------------------------------------------------------
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


def net_colors(names: Sequence[str]) -> dict[str, str]:
    """Colours for the nets, by name; nets without a known depth ranked in the order given."""
    ranks = {"plain": 0, "residual": 0}
    out = {}
    for name in names:
        family = "plain" if name.lower().startswith("plain") else "residual"
        out[name] = net_color(name, 2 * ranks[family])
        ranks[family] += 1
    return out


# --- gradient norms --------------------------------------------------------------------

def plot_norms_vs_depth(tables: Mapping[str, GradientNorms], kind: str = WEIGHT,
                        ax: Axes | None = None, title: str | None = None) -> Axes:
    """Per-layer gradient norm against depth (layer 1 = input side), one line per net.

    Norms that are exactly 0 (float32 underflow) cannot sit on a log axis: they are left
    out and the legend says so.
    """
    if not tables:
        raise ValueError("expected at least one net's GradientNorms, got none")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    colors = net_colors(list(tables))
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


# --- training curves -----------------------------------------------------------------------
def plot_history(history: History, axes: Any = None, title: str | None = None,
                 splits: Sequence[str] = ("train", "val", "test"), data: str = "",
                 classes: int = 10) -> Any:
    """Loss (left) and accuracy (right) per epoch for each of `splits` the history holds.

    `data` names the data set in the title (e.g. `resnet_edu.data.data_label(data)`). The
    training loss of a run with label smoothing is measured against the smoothed targets, the
    other splits' against the true labels, so its floor (`smoothed_loss_floor`) is drawn."""
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


# --- a trained classifier ------------------------------------------------------------------
def plot_confusion_matrix(matrix: torch.Tensor, classes: Sequence[str] = CLASSES,
                          title: str = "Confusion matrix") -> Any:
    """The matrix as row-normalized percentages (each row: where that class's images went)."""
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


# --- a linear stack ------------------------------------------------------------------------
def plot_gains_vs_depth(config: LinearStack, kinds: Sequence[str] = ("plain", "residual"),
                        ax=None):
    """Measured RMS gain of dx_k/dx_0 (solid) and its expectation (dashed) against depth k."""
    for kind in kinds:
        if kind not in ("plain", "residual"):
            raise ValueError(f"kinds must be 'plain' and/or 'residual', got {kind!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"plain": "tab:red", "residual": "tab:blue"}
    dark = {"plain": "#67001f", "residual": "#053061"}
    for kind in kinds:
        residual = kind == "residual"
        gains = jacobian_gains(config.build(residual))
        # measured: a wide pale band; expected: a dark dashed line drawn on top, so it stays
        # visible where the two agree
        ax.plot(gains.depths, gains.rms, color=colors[kind], lw=4, alpha=0.45,
                label=f"{kind}: measured")
        expected = [expected_rms_gain(config.scale, k, residual) for k in gains.depths]
        ax.plot(gains.depths, expected, color=dark[kind], ls=(0, (4, 2)), lw=1.6, zorder=3,
                label=f"{kind}: expected (RMS)")
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("depth k (number of linear blocks)")
    ax.set_ylabel(r"gain $\|\partial x_k/\partial x_0\|_F/\sqrt{d}$ (ratio)")
    ax.set_title(f"Gradient gain vs depth (width d={config.width}, scale s={config.scale:g})")
    ax.legend(loc="best", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    return ax


# --- a block's shapes ----------------------------------------------------------------------
def draw_block_shapes(spec: BlockSpec, ax=None):
    """Draw the block as two paths of boxes, the shapes written in, the sum green or red."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.4))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4)
    ax.axis("off")
    try:
        r = block_shapes(spec)
    except ValueError as e:  # e.g. a kernel larger than the feature map it slides over
        ax.text(5, 2, "This block cannot run:\n" + textwrap.fill(str(e), 70), ha="center",
                va="center", fontsize=11, color="#c62828")
        return ax

    def box(x: float, y: float, text: str, color: str, width: float = 2.1) -> None:
        ax.add_patch(FancyBboxPatch((x - width / 2, y - 0.38), width, 0.76,
                                    boxstyle="round,pad=0.05", fc=color, ec="0.3"))
        ax.text(x, y, text, ha="center", va="center", fontsize=10)

    def shape(t: Shape | None) -> str:
        return "x".join(map(str, t)) if t else "-"

    k, s = spec.kernel, spec.stride
    h1 = conv_output_size(spec.size, k, s, spec.padding)
    box(1.2, 2.0, f"x\n{shape(r.input)}", "#dde6f5")
    box(3.8, 3.2, f"conv {k}x{k}, stride {s}\n{spec.out_channels}x{h1}x{h1}", "#fde4c8")
    box(6.4, 3.2, f"conv {k}x{k}, stride 1\nF(x): {shape(r.main)}", "#fde4c8")
    box(5.1, 0.8, f"{r.shortcut_name}\n{shape(r.shortcut)}", "#e3f1df", width=3.6)
    for (x0, y0), (x1, y1) in [((2.25, 2.2), (2.75, 3.0)), ((4.85, 3.2), (5.35, 3.2)),
                               ((2.25, 1.8), (3.3, 0.9)), ((7.45, 3.0), (8.35, 2.25)),
                               ((6.9, 0.9), (8.35, 1.75))]:
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "0.3"})
    color = "#2e7d32" if r.addable else "#c62828"
    ax.add_patch(plt.Circle((8.7, 2.0), 0.35, fc="white", ec=color, lw=2.5))
    ax.text(8.7, 2.0, "+", ha="center", va="center", fontsize=18, color=color)
    ax.text(8.7, 1.3, "OK" if r.addable else "mismatch", ha="center", fontsize=10,
            color=color, weight="bold")
    ax.set_title(
        f"Basic block, shortcut {spec.shortcut!r}: {r.reason}\n"
        f"parameters: main path {r.main_params:,}, shortcut {r.shortcut_params:,}; "
        f"multiply-adds: {r.main_macs:,} and {r.shortcut_macs:,}",
        fontsize=11, color=color if not r.addable else "black")
    return ax


# --- loss landscapes (notebook 07) ---------------------------------------------------------
# The contour levels of Li et al.'s plotting code (vmin 0.1, vmax 10, a level every 0.5), the
# same for every net, so that crowded lines mean a steep landscape in every panel.
LEVELS = tuple(round(0.1 + 0.5 * i, 2) for i in range(20))


def _name(net: str) -> str:
    return DISPLAY_NAMES.get(net, net)


def plot_lines(nets: Mapping[str, Mapping[str, Any]], key: str = "random_line",
               ax: Axes | None = None) -> Axes:
    """The training loss along each net's 1-D line (log scale): `key` is "random_line" (a
    filter-normalized random direction, alpha = 0 at the trained weights) or "init_line"
    (Goodfellow et al.: alpha = 0 at the initial weights, 1 at the trained ones)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    colors = net_colors([_name(n) for n in nets])
    for net, result in nets.items():
        ax.plot(result[key]["alpha"], result[key]["loss"], marker=".", markersize=3,
                color=colors[_name(net)], label=_name(net))
    ax.set_yscale("log")
    ax.set_ylabel("training loss (cross-entropy, log scale)")
    if key == "init_line":
        ax.set_xlabel(r"$\alpha$: $\theta_0 + \alpha(\theta - \theta_0)$ "
                      "(0 = initial, 1 = trained)")
        ax.set_title("From the initial to the trained weights (Goodfellow et al. 2015)")
        for x in (0, 1):
            ax.axvline(x, color="0.6", linewidth=0.8, linestyle="--")
    else:
        ax.set_xlabel(r"$\alpha$: $\theta + \alpha\, d$ (d filter-normalized, "
                      "0 = trained)")
        ax.set_title("Loss along one random filter-normalized direction (Li et al. 2018)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_contours(nets: Mapping[str, Mapping[str, Any]], levels: Sequence[float] = LEVELS,
                  title: str | None = None) -> Any:
    """The 2-D loss surfaces side by side, one panel per net, with the same contour levels
    (Li et al.'s Fig. 5); the trained weights sit at (0, 0). Returns the figure."""
    fig, axes = plt.subplots(1, len(nets), figsize=(3.3 * len(nets), 3.5), squeeze=False,
                             constrained_layout=True)
    for ax, (net, result) in zip(axes[0], nets.items(), strict=True):
        surface = result["grid"]
        loss = torch.as_tensor(surface["loss"], dtype=torch.float64)
        a, b = (torch.as_tensor(surface[k], dtype=torch.float64) for k in ("alpha", "beta"))
        # loss[i, j] is at (alpha_i, beta_j): alpha runs along the x axis
        drawn = ax.contour(a.numpy(), b.numpy(), loss.T.numpy(), levels=list(levels),
                           cmap="viridis", linewidths=0.8)
        ax.clabel(drawn, drawn.levels[::4], fontsize=6)
        ax.plot(0, 0, marker="+", color="k")
        ax.set_title(f"{_name(net)}: loss {float(loss.min()):.2g} to {float(loss.max()):.3g}",
                     fontsize=9)
        ax.set_xlabel(r"$\alpha$ (along $d_1$)")
        ax.set_aspect("equal")
    axes[0][0].set_ylabel(r"$\beta$ (along $d_2$)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_hessian_ratios(nets: Mapping[str, Mapping[str, Any]], ax: Axes | None = None) -> Axes:
    """|lam_min / lam_max| of each net's Hessian at its trained weights, on a linear axis from
    0 (as Li et al.'s Fig. 7 colours it): near 0 where the landscape is nearly convex there,
    large where it curves down strongly."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    names = [_name(n) for n in nets]
    colors = net_colors(names)
    ratios = [r["hessian"]["ratio"] for r in nets.values()]
    bars = ax.bar(names, ratios, color=[colors[n] for n in names])
    ax.bar_label(bars, [f"{r:.3g}" for r in ratios], fontsize=8)
    ax.set_ylim(0, 1.15 * max([*ratios, 1e-3]))
    ax.set_ylabel(r"$|\lambda_{min} / \lambda_{max}|$")
    ax.set_title("Negative against positive curvature at the trained weights")
    ax.grid(True, axis="y", alpha=0.3)
    return ax
