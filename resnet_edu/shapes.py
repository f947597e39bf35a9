"""Shape rules of a ResNet: the conv output-size rule and a block calculator.

"If conv1 has stride 2, F(x) and x have different shapes: how can they be added?" They
cannot, so the shortcut changes shape too (He et al. 2015, "Deep Residual Learning", Eq. 2
and Sec. 3.3). This module makes the shapes visible:

- `conv_output_size`: floor((H + 2p - d(k-1) - 1) / s) + 1, the size `nn.Conv2d` (and the
  pooling layers) produce; `kernel_windows` lists which input pixels each output reads.
- `block_shapes(BlockSpec(...))`: the calculator behind the notebook's interactive cell,
  a pure function: both paths' shapes, whether they can be added, and the cost in
  parameters and multiply-adds.

What a real model does to shapes, module by module, is traced by `resnet_edu.shape_trace`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_int
from .shortcuts import SHORTCUT_OPTIONS, needs_projection

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------
# the output-size rule


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1, *, ceil_mode: bool = False) -> int:
    """Output length of a convolution (or max/avg pool) along one spatial axis.

    The kernel covers d(k-1)+1 pixels; it starts at 0, s, 2s, ... on the padded input of
    length H + 2p and must end inside it, so there are floor((H + 2p - d(k-1) - 1)/s) + 1
    positions. `ceil_mode` rounds up instead, as pooling layers allow, but (like PyTorch)
    never starts a window in the right padding.
    """
    for name, value in (("size", size), ("kernel", kernel), ("stride", stride),
                        ("dilation", dilation)):
        check_int(name, value, low=1)
    check_int("padding", padding, low=0)
    span = dilation * (kernel - 1) + 1  # pixels one window covers
    if span > size + 2 * padding:
        raise ValueError(
            f"the kernel covers {span} pixels (kernel={kernel}, dilation={dilation}) but the "
            f"padded input has only {size + 2 * padding} (size={size}, padding={padding})"
        )
    room = size + 2 * padding - span  # how far the window can slide
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start in the right padding only
    return out


def kernel_windows(size: int, kernel: int, stride: int = 1, padding: int = 0,
                   dilation: int = 1) -> list[list[int]]:
    """For each output position, the input indices its window reads (one axis).

    Indices below 0 or from `size` up are padding (zeros), not pixels.
    """
    n = conv_output_size(size, kernel, stride, padding, dilation)
    return [[o * stride - padding + j * dilation for j in range(kernel)] for o in range(n)]


def pixels_read(size: int, kernel: int, stride: int = 1, padding: int = 0,
                dilation: int = 1) -> torch.Tensor:
    """How many windows read each input pixel, as an (size, size) count map.

    A 1x1 conv with stride 2 reads one pixel in four; a 3x3 conv with stride 2 and padding 1
    reads them all (some twice).
    """
    counts = torch.zeros(size, dtype=torch.long)
    for window in kernel_windows(size, kernel, stride, padding, dilation):
        for i in window:
            if 0 <= i < size:
                counts[i] += 1
    return counts[:, None] * counts[None, :]  # 2-D windows are products of 1-D ones


def window_diagram(size: int, kernel: int, stride: int = 1, padding: int = 0,
                   dilation: int = 1) -> str:
    """A text picture of the windows sliding over one row of the padded input."""
    windows = kernel_windows(size, kernel, stride, padding, dilation)
    cells = list(range(-padding, size + padding))
    label = "output"
    width = len(f"{label} {len(windows) - 1}")
    head = [" p" if not 0 <= i < size else f"{i:2d}" for i in cells]
    lines = [f"{'input':<{width}} |" + " ".join(head)]
    for o, window in enumerate(windows):
        marks = ["[]" if i in window else " ." for i in cells]
        lines.append(f"{label + ' ' + str(o):<{width}} |" + " ".join(marks))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# the block calculator (pure: no modules built, no front end needed)

CALCULATOR_SHORTCUTS = ("none", *SHORTCUT_OPTIONS)


@dataclass(frozen=True)
class BlockSpec:
    """A basic block (two k x k convs, the first strided) on a square input.

    `shortcut` is "none" (x added as it is: the naive block) or an option A/B/C/D of
    `resnet_edu.shortcuts`.
    """

    size: int = 32
    in_channels: int = 16
    out_channels: int = 32
    stride: int = 2
    kernel: int = 3
    padding: int = 1
    shortcut: str = "none"

    def __post_init__(self) -> None:
        for name in ("size", "in_channels", "out_channels", "stride", "kernel"):
            check_int(name, getattr(self, name), low=1)
        check_int("padding", self.padding, low=0)
        if self.shortcut not in CALCULATOR_SHORTCUTS:
            raise ValueError(
                f"shortcut must be one of {', '.join(CALCULATOR_SHORTCUTS)}, "
                f"got {self.shortcut!r}"
            )


@dataclass(frozen=True)
class BlockShapes:
    """What the calculator found: (C, H, W) of both paths, whether F(x) + shortcut(x) is
    defined, why not, the parameters of each path (convs without bias, BN: 2 per channel)
    and the multiply-adds of its convolutions for one image (BN, ReLU and option D's
    average pool add a few operations per value, not counted)."""

    input: Shape
    main: Shape
    shortcut: Shape | None
    addable: bool
    reason: str
    main_params: int
    shortcut_params: int
    shortcut_name: str
    main_macs: int = 0
    shortcut_macs: int = 0


def block_shapes(spec: BlockSpec) -> BlockShapes:
    """Both paths of a basic block, for the interactive calculator and its tests."""
    s, cin, cout, k, p = spec.size, spec.in_channels, spec.out_channels, spec.kernel, spec.padding
    try:
        h1 = conv_output_size(s, k, spec.stride, p)  # conv1 carries the stride
    except ValueError as e:
        raise ValueError(f"conv1 cannot run on the {s}x{s} input: {e}") from None
    try:
        h2 = conv_output_size(h1, k, 1, p)  # conv2 keeps the size only if p = (k-1)/2
    except ValueError as e:
        raise ValueError(f"conv2 cannot run on the {h1}x{h1} map conv1 leaves: {e}") from None
    main = (cout, h2, h2)
    main_params = cin * cout * k * k + cout * cout * k * k + 2 * 2 * cout  # 2 convs, 2 BNs
    # each output value of a k x k conv costs C_in k k multiply-adds
    main_macs = cin * k * k * cout * h1 * h1 + cout * k * k * cout * h2 * h2
    needed = needs_projection(cin, cout, spec.stride)
    option = spec.shortcut
    short: Shape | None
    params = macs = 0
    if option == "none" or (option in ("A", "B", "D") and not needed):
        short, name = (cin, s, s), "identity"
    elif option == "A":
        if cout < cin:
            return BlockShapes((cin, s, s), main, None, False,
                               f"option A can only add channels, not go {cin} -> {cout}",
                               main_params, 0, "A: subsample + zero-pad", main_macs, 0)
        h = conv_output_size(s, 1, spec.stride)  # x[:, :, ::s, ::s]
        short, name = (cout, h, h), "A: subsample + zero-pad"
    elif option == "D":
        h = conv_output_size(s, spec.stride, spec.stride, ceil_mode=True)
        short, name = (cout, h, h), "D: avg-pool + 1x1 conv + BN"
        params, macs = cin * cout + 2 * cout, cin * cout * h * h
    else:  # B where needed, C everywhere: a strided 1x1 conv + BN (Eq. 2)
        h = conv_output_size(s, 1, spec.stride)
        short, name = (cout, h, h), f"{option}: 1x1 conv, stride {spec.stride} + BN"
        params, macs = cin * cout + 2 * cout, cin * cout * h * h
    problems = []
    if short[0] != main[0]:
        problems.append(f"channels differ ({main[0]} vs {short[0]})")
    if short[1:] != main[1:]:
        problems.append(f"spatial sizes differ ({main[1]}x{main[2]} vs {short[1]}x{short[2]})")
    reason = "shapes match" if not problems else "; ".join(problems)
    return BlockShapes((cin, s, s), main, short, not problems, reason, main_params, params,
                       name, main_macs, macs)


def describe_block(spec: BlockSpec) -> str:
    """The calculator's answer as a few lines of text."""
    r = block_shapes(spec)
    fmt = "x".join
    lines = [
        f"input x        : {fmt(map(str, r.input))}",
        f"main path F(x) : {fmt(map(str, r.main))}  (two {spec.kernel}x{spec.kernel} convs, "
        f"stride {spec.stride}, padding {spec.padding}; {r.main_params:,} parameters, "
        f"{r.main_macs:,} multiply-adds)",
        "shortcut       : "
        + (fmt(map(str, r.shortcut)) if r.shortcut else "-")
        + f"  ({r.shortcut_name}; {r.shortcut_params:,} parameters, "
        f"{r.shortcut_macs:,} multiply-adds)",
        ("F(x) + shortcut: OK, " if r.addable else "F(x) + shortcut: cannot add: ") + r.reason,
    ]
    return "\n".join(lines)
