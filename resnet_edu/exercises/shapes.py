"""Checks for notebook 03 (shapes and shortcuts). Real PyTorch modules are the oracle."""

from __future__ import annotations

import functools
from collections.abc import Callable
from itertools import product

import torch
from torch import nn

from ..blocks import BasicBlock
from ..shapes import conv_output_size
from . import NotYet, exercise

# Exercise 2: a BasicBlock(64, 128, stride=2) receives a batch of shape (8, 64, 15, 15)
BLOCK_INPLANES, BLOCK_PLANES, BLOCK_STRIDE = 64, 128, 2
BLOCK_INPUT = (8, 64, 15, 15)

# Exercise 3: (in_channels, out_channels, stride, H) the student's shortcut must handle
SHORTCUT_CASES = ((64, 128, 2, 8), (64, 64, 1, 8), (16, 32, 2, 7), (32, 32, 2, 9))


@functools.cache
def _torch_conv_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The oracle: what nn.Conv2d really produces along one axis."""
    out = nn.functional.conv2d(torch.zeros(1, 1, size, 1), torch.zeros(1, 1, kernel, 1),
                               stride=(stride, 1), padding=(padding, 0),
                               dilation=(dilation, 1))
    return out.shape[2]


@exercise
def check_conv_output_size(fn: Callable[..., int]) -> str:
    """Exercise 1: `fn(size, kernel, stride, padding, dilation)` must match nn.Conv2d."""
    grid = [  # odd and even sizes, every stride up to 3; undilated cases first
        (h, k, s, p, d)
        for d, h, k, s, p in product((1, 2), (1, 4, 7, 8, 15), (1, 3, 7), (1, 2, 3), (0, 1, 3))
        if d * (k - 1) + 1 <= h + 2 * p
    ]
    for h, k, s, p, d in grid:
        got = fn(h, k, s, p, d)
        if got is None:
            raise NotImplementedError
        want = _torch_conv_size(h, k, s, p, d)
        if got == want and isinstance(got, int) and not isinstance(got, bool):
            continue
        case = f"size={h}, kernel={k}, stride={s}, padding={p}, dilation={d}"
        if isinstance(got, float) and got == want:
            raise NotYet(f"for {case} you return {got!r}, a float: sizes are ints "
                         "(use floor division //)")
        if isinstance(got, (int, float)) and not isinstance(got, bool) and got > h + 2 * p:
            raise NotYet(f"for {case} you return {got}, more than the padded input: a "
                         "stride-s conv takes every s-th window, so it shrinks H, never "
                         "grows it")
        if isinstance(got, float):
            raise NotYet(f"for {case} you return {got!r}, but nn.Conv2d gives {want}: round "
                         "down with //, since a window must fit inside the padded input")
        hint = ("the kernel covers d*(k-1)+1 pixels when dilated" if d > 1 else
                "count the window positions 0, s, 2s, ... that still fit in H + 2p")
        raise NotYet(f"for {case} you return {got!r}, but nn.Conv2d gives {want}: {hint}")
    return f"your formula matches nn.Conv2d on all {len(grid)} cases."


@exercise
def check_block_output_shape(answer: object) -> str:
    """Exercise 2: the output shape of BasicBlock(64, 128, stride=2) on (8, 64, 15, 15)."""
    if answer is ... or answer is None:
        raise NotImplementedError
    block = BasicBlock(BLOCK_INPLANES, BLOCK_PLANES, BLOCK_STRIDE).eval()
    with torch.no_grad():
        want = tuple(block(torch.zeros(BLOCK_INPUT)).shape)
    try:
        got = tuple(int(s) for s in answer)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise NotYet(f"answer with 4 ints (B, C, H, W), got {answer!r}") from None
    if len(got) != 4:
        raise NotYet(f"a block maps (B, C, H, W) to (B, C', H', W'): 4 numbers, got {len(got)}")
    b, c, h, w = got
    h_in = BLOCK_INPUT[2]
    if b != want[0]:
        raise NotYet(f"the batch size B={b} is wrong: a block never changes the batch "
                     f"({BLOCK_INPUT[0]} images in, {BLOCK_INPUT[0]} out)")
    if c != want[1]:
        raise NotYet(f"C={c} is wrong: the block's convs output `planes` channels "
                     f"(times expansion, which is 1 for a BasicBlock)")
    if h > h_in or w > h_in:
        raise NotYet(f"H, W = {h}, {w} is larger than the input's {h_in}: stride 2 halves "
                     "the size, it does not double it")
    if (h, w) != want[2:]:
        k, s, p = 3, BLOCK_STRIDE, 1
        hint = f"floor(({h_in} + 2*{p} - {k}) / {s}) + 1"
        raise NotYet(f"H, W = {h}, {w} is wrong: conv1 (3x3, stride 2, padding 1) gives "
                     f"{hint}; conv2 (stride 1) keeps it")
    return (f"{want}: conv1 takes 15 to {conv_output_size(h_in, 3, 2, 1)} (odd sizes round "
            "up to ceil(15/2)), conv2 keeps it, and there are 128 channels.")


@exercise
def check_shortcut(make_shortcut: Callable[[int, int, int], nn.Module | None]) -> str:
    """Exercise 3: `make_shortcut(in_channels, out_channels, stride)` makes a BasicBlock work.

    The returned module replaces the block's `downsample` (None means the identity), and the
    block must run on every case in SHORTCUT_CASES, with a shortcut that carries x.
    """
    notes = []
    for cin, cout, stride, size in SHORTCUT_CASES:
        case = f"in_channels={cin}, out_channels={cout}, stride={stride} on {size}x{size}"
        module = make_shortcut(cin, cout, stride)
        if module is not None and not isinstance(module, nn.Module):
            raise NotYet(f"for {case} you return a {type(module).__name__}: return an "
                         "nn.Module (nn.Identity(), nn.Sequential(...)) so the block "
                         "registers its weights")
        torch.manual_seed(0)
        block = BasicBlock(cin, cout, stride)
        block.downsample = module
        x = torch.randn(2, cin, size, size)
        with torch.no_grad():
            main = tuple(block.residual_branch(x).shape)
            short = tuple(block.shortcut(x).shape)
        if short != main:
            what = []
            if short[1] != main[1]:
                what.append(f"channels {short[1]} vs {main[1]} (a 1x1 conv changes them)")
            if short[2:] != main[2:]:
                what.append(f"size {short[2]}x{short[3]} vs {main[2]}x{main[3]} "
                            "(give the 1x1 conv the block's stride)")
            raise NotYet(f"for {case} the shortcut gives {short[1:]} but F(x) has {main[1:]}: "
                         + "; ".join(what))
        with torch.no_grad():
            a, b = block.shortcut(x), block.shortcut(2 * x + 1)
        if torch.allclose(a, b):
            raise NotYet(f"for {case} the shortcut's output does not depend on x: it must "
                         "carry x (or a projection of it) past the convs")
        projects = module is not None and any(True for _ in module.parameters())
        if projects and cin == cout and stride == 1:
            notes.append("you project even where the shapes already match: that is "
                         "option C, which works but costs parameters; option B uses the "
                         "identity there")
    return "the block runs in every case. " + (notes[0] if notes else
                                                "Shapes match and x gets through.")
