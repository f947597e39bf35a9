"""Checks for notebook 03 (shapes and shortcuts). Real PyTorch modules are the oracle."""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import torch
from torch import nn

from ..blocks import BasicBlock
from ..shapes import conv_output_size
from ..shortcuts import needs_projection
from .exercise import NotYet, exercise, names_used, returned_none

# Exercise 3: a BasicBlock(64, 128, stride=2) whose two 3x3 convs have padding 0 receives a
# batch of shape (8, 64, 15, 15); its shortcut is option B
BLOCK_INPLANES, BLOCK_PLANES, BLOCK_STRIDE = 64, 128, 2
BLOCK_INPUT = (8, 64, 15, 15)

# Exercise 1: (in_channels, out_channels, stride, H) the student's shortcut must handle
SHORTCUT_CASES = ((64, 64, 1, 8), (64, 128, 2, 8), (16, 32, 2, 7), (32, 32, 2, 9),
                  (64, 256, 1, 8))


@functools.cache
def _torch_conv_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The oracle: what nn.Conv2d really produces along one axis."""
    out = nn.functional.conv2d(torch.zeros(1, 1, size, 1), torch.zeros(1, 1, kernel, 1),
                               stride=(stride, 1), padding=(padding, 0),
                               dilation=(dilation, 1))
    return out.shape[2]


@exercise
def check_conv_output_size(fn: Callable[..., int]) -> str:
    """Exercise 2: `fn(size, kernel, stride, padding, dilation)` must match nn.Conv2d."""
    try:
        inspect.signature(fn).bind(1, 1, 1, 1, 1)
    except TypeError:
        raise NotYet("conv_out must take 5 arguments, (size, kernel, stride, padding, "
                     "dilation=1); keep the `dilation=1` parameter of the cell, even if you "
                     "start with undilated kernels") from None
    except ValueError:  # no signature to read (a builtin): just call it
        pass
    grid = [  # odd and even sizes, every stride up to 3; undilated cases first
        (h, k, s, p, d)
        for d, h, k, s, p in product((1, 2), (1, 4, 7, 8, 15), (1, 3, 7), (1, 2, 3), (0, 1, 3))
        if d * (k - 1) + 1 <= h + 2 * p
    ]
    for h, k, s, p, d in grid:
        got = fn(h, k, s, p, d)
        if got is None:
            raise returned_none(fn, "your conv_out")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()  # a 0-d tensor: its number
        if isinstance(got, numbers.Integral) and not isinstance(got, bool):
            got = int(got)  # numpy and other integer types are ints too
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


def _unpadded_block() -> BasicBlock:
    """The block of Exercise 3: BasicBlock(64, 128, stride=2), its 3x3 convs unpadded."""
    block = BasicBlock(BLOCK_INPLANES, BLOCK_PLANES, BLOCK_STRIDE).eval()
    block.conv1.padding = block.conv2.padding = (0, 0)
    return block


def _shape(answer: object, name: str) -> tuple[int, ...]:
    if answer is ... or answer is None:
        raise NotImplementedError
    try:
        got = tuple(int(s) for s in answer)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise NotYet(f"give {name} as 4 ints (B, C, H, W), got {answer!r}") from None
    if len(got) != 4:
        raise NotYet(f"{name} is a (B, C, H, W) shape: 4 numbers, got {len(got)}")
    return got


@exercise
def check_unpadded_block(f_shape: object, shortcut_shape: object) -> str:
    """Exercise 3: the shapes of F(x) and of the option-B shortcut of BasicBlock(64, 128,
    stride=2) with unpadded 3x3 convs, on (8, 64, 15, 15); the real modules are the oracle."""
    block = _unpadded_block()
    x = torch.zeros(BLOCK_INPUT)
    with torch.no_grad():
        want_f = tuple(block.residual_branch(x).shape)
        want_s = tuple(block.downsample(x).shape)
    f, sc = _shape(f_shape, "F(x)'s shape"), _shape(shortcut_shape, "the shortcut's shape")
    n, h_in = BLOCK_INPUT[0], BLOCK_INPUT[2]
    h1 = conv_output_size(h_in, 3, BLOCK_STRIDE, 0)
    for name, got, want in (("F(x)", f, want_f), ("the shortcut", sc, want_s)):
        if got[0] != n:
            raise NotYet(f"{name}: B={got[0]} is wrong: a block never changes the batch "
                         f"({n} images in, {n} out)")
        if got[1] != want[1]:
            raise NotYet(f"{name}: C={got[1]} is wrong: both paths end with {want[1]} "
                         "channels, out_channels, or they could never be added")
        if max(got[2:]) > h_in:
            raise NotYet(f"{name}: H, W = {got[2]}, {got[3]} is larger than the input's "
                         f"{h_in}: stride 2 shrinks the map, it does not grow it")
    if f[2:] != want_f[2:]:
        padded = conv_output_size(h_in, 3, BLOCK_STRIDE, 1)
        if f[2:] == (padded, padded):
            hint = (f"{padded} is what the usual padding=1 gives; with padding=0 each 3x3 "
                    "conv reads no zeros at the border")
        elif f[2:] == (h1, h1):
            hint = (f"conv1 gives {h1}, but conv2 (3x3, stride 1, padding 0) shrinks it "
                    f"again, by k - 1 = 2")
        else:
            hint = "use your formula once per conv"
        raise NotYet(f"F(x): H, W = {f[2]}, {f[3]} is wrong: {hint}. conv1 (3x3, stride 2, "
                     f"padding 0) gives floor(({h_in} - 3) / 2) + 1, then conv2 (3x3, "
                     "stride 1, padding 0) takes its turn")
    if sc[2:] != want_s[2:]:
        if sc[2:] == want_f[2:]:
            hint = ("the shortcut does not copy the main path's padding: it is a 1x1 conv "
                    "with stride 2, and a 1x1 kernel needs no padding to keep its border")
        elif sc[2] == h_in // 2:
            hint = (f"on an odd size stride 2 rounds up: the floor applies before the + 1, "
                    f"floor(({h_in} - 1) / 2) + 1")
        else:
            hint = f"a 1x1 conv with stride 2, padding 0: floor(({h_in} - 1) / 2) + 1"
        raise NotYet(f"the shortcut: H, W = {sc[2]}, {sc[3]} is wrong: {hint}")
    return (f"F(x) is {want_f[2]}x{want_f[3]} and the shortcut {want_s[2]}x{want_s[3]}: they "
            f"cannot be added, and no shortcut option helps, since the shortcut would have to "
            f"crop the border. Each unpadded 3x3 conv loses k - 1 = 2 pixels; padding "
            f"(k - 1) / 2 = 1 keeps the size, so only the stride changes it, on both paths.")


# the modules a shortcut must not contain: it carries x past the nonlinearities (Eq. 2: W_s x)
_NONLINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.Tanh)
_POOLS = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# what Exercise 1 accepts where the shapes differ (He et al. 2015, Sec. 3.3)
SHORTCUT_ANSWERS = ("A", "B")


@dataclass(frozen=True)
class ShortcutVerdict:
    """What `judge_shortcut_option` found: "identity" (the shapes match), "A" or "B", a
    one-line verdict, and the shortcut's parameter count."""

    option: str
    message: str
    parameters: int
    padding: str = ""  # option A: where the zero channels go ("at the end", "on both sides")


def option_b_parameters(in_channels: int, out_channels: int) -> int:
    """Option B's cost where the shape changes: the 1x1 conv's weights and BN's gamma, beta."""
    return in_channels * out_channels + 2 * out_channels


def _spatial_hint(module: nn.Module, stride: int, got: int, want: int, size: int) -> str:
    """Why a shortcut's H, W differ from F(x)'s: its stride, its padding, or, without a conv,
    the pixels it keeps."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        if got == size and stride > 1:
            return (f"your shortcut keeps x's {size}x{size}: subsample it with the block's "
                    f"stride, {stride}")
        if size % 2 == 0:
            return (f"you keep {got} of {size} rows and columns, F(x) has {want}: subsample "
                    f"with the block's stride, {stride}")
        return (f"the main path's 3x3 windows (stride {stride}, padding 1) are centred on rows "
                f"and columns 0, {stride}, {2 * stride}, ...: keep those pixels, which gives "
                f"{want}, ceil({size}/{stride}), on odd sizes too")
    if all(c.stride == (stride, stride) for c in convs):
        padded = [c for c in convs if c.padding != tuple((k - 1) // 2 for k in c.kernel_size)]
        if padded:
            pad = padded[0].padding
            pad = pad[0] if isinstance(pad, tuple) else repr(pad)
            return (f"the stride is right, but padding={pad} adds a border "
                    "of zeros the main path does not have: a 1x1 conv needs padding=0")
    return "give the 1x1 conv the block's stride"


def _failure_hint(module: nn.Module, in_channels: int, out_channels: int) -> str:
    """Why a shortcut could not run on x, in the notebook's words (no PyTorch message)."""
    channels = in_channels  # follow x's channel count through the layers in order
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels != channels:
                return (f"your {m.kernel_size[0]}x{m.kernel_size[1]} conv expects "
                        f"{m.in_channels} input channels, but it receives {channels}: the "
                        f"block's input x has in_channels={in_channels}")
            channels = m.out_channels
        elif isinstance(m, nn.BatchNorm2d) and m.num_features != channels:
            return (f"your BatchNorm2d has {m.num_features} features, but the tensor it "
                    f"normalizes has {channels} channels: BatchNorm2d(n) needs n = the "
                    "channels of its input")
    return (f"follow x ({in_channels} channels) through your shortcut layer by layer: it must "
            f"come out with {out_channels} channels and F(x)'s height and width")


def _run(module: nn.Module, x: torch.Tensor, case: str, in_channels: int,
         out_channels: int) -> torch.Tensor:
    """module(x) in eval mode without gradients; a failure becomes a hint, not an error."""
    try:
        with torch.no_grad():
            out = module(x)
    except NotImplementedError:
        raise
    except Exception as e:  # the student's module: say what is off in words
        raise NotYet(f"for {case} your shortcut cannot run on x of shape {tuple(x.shape)} "
                     f"(it raised {type(e).__name__}): "
                     + _failure_hint(module, in_channels, out_channels)) from None
    if not isinstance(out, torch.Tensor):
        raise NotYet(f"for {case} your shortcut returns a {type(out).__name__}: its forward "
                     "must return a tensor")
    return out


def _zero_channel_offset(out: torch.Tensor, x: torch.Tensor, stride: int) -> int | None:
    """Where x's channels sit in `out` if `out` is option A of x (x[:, :, ::s, ::s] and zero
    channels around it), else None."""
    sub = x[:, :, ::stride, ::stride]
    cin = sub.shape[1]
    if out.shape[0] != sub.shape[0] or out.shape[2:] != sub.shape[2:] or out.shape[1] < cin:
        return None
    for k in range(out.shape[1] - cin + 1):
        rest = torch.cat([out[:, :k], out[:, k + cin:]], dim=1)
        if (torch.allclose(out[:, k:k + cin], sub, rtol=0, atol=1e-6)
                and (rest.numel() == 0 or float(rest.abs().max()) <= 1e-6)):
            return k
    return None


def _not_option_a(out: torch.Tensor, x: torch.Tensor, stride: int, layers: list[nn.Module],
                  case: str) -> NotYet:
    """A parameter-free shortcut of the right shape that is not option A: what is off."""
    cin = x.shape[1]
    pools = [type(m).__name__ for m in layers if isinstance(m, _POOLS)]
    if pools:
        return NotYet(f"for {case} your shortcut pools ({', '.join(pools)}): option A does not "
                      "average or take maxima, it keeps every s-th pixel of x unchanged")
    for offset in product(range(stride), repeat=2):
        sub = x[:, :, offset[0]::stride, offset[1]::stride]
        if offset != (0, 0) and sub.shape[2:] == out.shape[2:] and any(
                torch.allclose(out[:, k:k + cin], sub, rtol=0, atol=1e-6)
                for k in range(out.shape[1] - cin + 1)):
            return NotYet(f"for {case} you keep rows {offset[0]}, {offset[0] + stride}, ... and "
                          f"columns {offset[1]}, {offset[1] + stride}, ...: the main path's "
                          "windows are centred on rows and columns 0, s, 2s, ..., so keep those "
                          "(on an odd size yours also has one pixel too few)")
    pooled = nn.functional.avg_pool2d(x, stride, ceil_mode=True)
    if pooled.shape[2:] == out.shape[2:] and any(
            torch.allclose(out[:, k:k + cin], pooled, rtol=0, atol=1e-5)
            for k in range(out.shape[1] - cin + 1)):
        return NotYet(f"for {case} your shortcut averages {stride}x{stride} pixels: option A "
                      "does not average, it keeps every s-th pixel of x unchanged")
    sub = x[:, :, ::stride, ::stride]
    for k in range(out.shape[1] - cin + 1):
        if torch.allclose(out[:, k:k + cin], sub, rtol=0, atol=1e-6):
            return NotYet(f"for {case} x's channels are there, but the {out.shape[1] - cin} "
                          "extra channels are not zero: option A appends channels of zeros "
                          "(copies of x would be a different shortcut)")
    ratio = out.flatten() @ torch.nn.functional.pad(
        sub, (0, 0, 0, 0, 0, out.shape[1] - cin)).flatten()
    scale = float(ratio / sub.square().sum())
    if _zero_channel_offset(out / scale, x, stride) is not None and abs(scale - 1) > 1e-3:
        return NotYet(f"for {case} your shortcut multiplies x by {scale:.3g}: the identity "
                      "part of option A carries x unchanged")
    return NotYet(f"for {case} your shortcut has no weights but is not option A: where the "
                  "shape changes, option A keeps x's pixels at rows and columns 0, s, 2s, ... "
                  "unchanged and appends out_channels - in_channels channels of zeros")


def _library_modules(module: nn.Module) -> list[str]:
    """The library's own modules inside a shortcut (ZeroPadShortcut, a block, ...), named by
    the library class they are or derive from."""
    return sorted({base.__name__ for m in module.modules() for base in type(m).__mro__[:1]
                   + tuple(b for b in type(m).__mro__ if b.__module__.split(".")[0]
                           == "resnet_edu")[:1]
                   if base.__module__.split(".")[0] == "resnet_edu"})


def judge_shortcut_option(module: object, in_channels: int, out_channels: int, stride: int,
                          accept: tuple[str, ...] = SHORTCUT_ANSWERS) -> ShortcutVerdict:
    """Judge a shortcut for a basic block (two 3x3 convs with padding 1, the first strided).

    Where x already has F(x)'s shape it must be the identity (`None` or `nn.Identity()`).
    Where it does not, `accept` names what passes (He et al. 2015, Sec. 3.3):
    "A": x[:, :, ::s, ::s] with zero channels appended, at the end or on both sides, no
    parameters; "B": a 1x1 conv with the block's stride, padding 0, no bias, then
    BatchNorm. Returns the verdict, or raises NotYet with what exactly is off (in words,
    never a PyTorch error). The library's own modules are refused.
    """
    case = f"in_channels={in_channels}, out_channels={out_channels}, stride={stride}"
    if module is not None and not isinstance(module, nn.Module):
        raise NotYet(f"for {case} you return a {type(module).__name__}: return an nn.Module "
                     "(nn.Identity(), nn.Sequential(...), or an nn.Module subclass of your own) "
                     "or None, so the block registers it")
    if module is not None and (own := _library_modules(module)):
        raise NotYet(f"for {case} your shortcut is built from the library's own "
                     f"{', '.join(own)}: write the shortcut yourself from torch.nn layers (or "
                     "a small nn.Module of your own)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x, x2 = torch.randn(2, 2, in_channels, 8, 8)
        x_odd = torch.randn(2, in_channels, 7, 7)
    want = (2, out_channels, *(conv_output_size(8, 3, stride, 1),) * 2)
    want_odd = (2, out_channels, *(conv_output_size(7, 3, stride, 1),) * 2)
    params = 0 if module is None else sum(p.numel() for p in module.parameters())
    if not needs_projection(in_channels, out_channels, stride):
        if params:
            raise NotYet(f"for {case} your shortcut has parameters, but x already has F(x)'s "
                         "shape: return None (the identity) here. A projection on every block "
                         "is option C (He et al. 2015, Table 3), which this rule does not use: "
                         "the identity costs nothing where it fits")
        if module is not None:
            same = _run(module.eval(), x, case, in_channels, out_channels)
            if not (same.shape == x.shape and torch.equal(same, x)):
                raise NotYet(f"for {case} x already has F(x)'s shape, so the shortcut is x "
                             "itself: return None or nn.Identity()")
        return ShortcutVerdict("identity", "the identity, since x already has F(x)'s shape", 0)
    if module is None or isinstance(module, nn.Identity):
        need = ("option B needs a projection" if accept == ("B",) else
                "the shortcut must take x to F(x)'s shape")
        raise NotYet(f"for {case} you return the identity, but x ({in_channels} channels, "
                     f"8x8) cannot be added to F(x) ({want[1]} channels, {want[2]}x{want[3]}): "
                     f"{need}")
    nonlinear = [type(m).__name__ for m in module.modules() if isinstance(m, _NONLINEAR)]
    if nonlinear:
        raise NotYet(f"for {case} your shortcut contains {', '.join(nonlinear)}: a shortcut "
                     "has no activation, it must stay linear (W_s x in He et al. 2015, Eq. 2) "
                     "and carry x past the block's nonlinearities")
    module.eval()
    layers = [m for m in module.modules() if not any(True for _ in m.children())]
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    for inp, target in ((x, want), (x_odd, want_odd)):
        got = _run(module, inp, case, in_channels, out_channels)
        if tuple(got.shape) != target:
            what = []
            if got.ndim != 4 or got.shape[0] != target[0]:
                what.append("keep the batch and the (B, C, H, W) layout")
            elif not convs and got.shape[2] != got.shape[3]:
                what.append("your zeros went into H or W: F.pad's pairs start from the last "
                            "dimension, (W left, W right, H top, H bottom, C front, C back)")
            else:
                if got.shape[1] != target[1]:
                    if convs:
                        what.append(f"out_channels={out_channels} for the 1x1 conv")
                    elif got.shape[1] == in_channels:
                        what.append(f"x has {in_channels} channels, F(x) {out_channels}: "
                                    "add the missing ones")
                    else:
                        what.append(f"you end with {got.shape[1]} channels, F(x) has "
                                    f"{out_channels}")
                if tuple(got.shape[2:]) != target[2:]:
                    what.append(_spatial_hint(module, stride, got.shape[2], target[2],
                                              inp.shape[2]))
            raise NotYet(f"for {case} your shortcut maps {tuple(inp.shape)} to "
                         f"{tuple(got.shape)}, but the main path F(x) gives {target}: "
                         + "; ".join(what))
    got, got2 = _run(module, x, case, in_channels, out_channels), _run(
        module, x2, case, in_channels, out_channels)
    if torch.allclose(got, got2):
        raise NotYet(f"for {case} the shortcut's output does not depend on x: it must carry "
                     "x (or a projection of it) past the convs")
    pools = [type(m).__name__ for m in layers if isinstance(m, _POOLS)]
    if not convs:
        offset = _zero_channel_offset(got, x, stride) if not params else None
        if offset is not None and _zero_channel_offset(
                _run(module, x_odd, case, in_channels, out_channels), x_odd, stride) == offset:
            extra = out_channels - in_channels
            where = ("none needed" if not extra else "at the end" if offset == 0 else
                     "at the front" if offset == extra else "on both sides"
                     if offset in (extra // 2, -(-extra // 2)) else
                     f"{offset} before x's channels, {extra - offset} after")
            if "A" not in accept:
                raise NotYet(f"for {case} your shortcut is option A (x subsampled, zero "
                             "channels added, no weights): a correct shortcut, but this "
                             f"exercise asks for option {' or '.join(accept)}, a 1x1 conv "
                             "that learns how to mix the channels")
            return ShortcutVerdict(
                "A", f"option A: x[:, :, ::{stride}, ::{stride}] with {extra} zero channels "
                f"({where}), 0 parameters", 0, where)
        if "A" not in accept:
            raise NotYet(f"for {case} your shortcut has no conv (zero channels are option A): "
                         "option B projects with a 1x1 conv, which learns how to mix the "
                         "channels")
        if params:
            raise NotYet(f"for {case} your shortcut has {params} weights but no conv: option A "
                         "has no weights at all, option B is a 1x1 conv then BatchNorm")
        raise _not_option_a(got, x, stride, layers, case)
    if "B" not in accept:
        raise NotYet(f"for {case} your shortcut has a conv: this exercise asks for option A, "
                     "which has no weights")
    if pools:
        raise NotYet(f"for {case} your shortcut pools ({', '.join(pools)}) before projecting: "
                     "that is ResNet-D (He et al. 2019). Option B's 1x1 conv itself takes the "
                     "block's stride")
    if len(convs) > 1:
        raise NotYet(f"for {case} your shortcut has {len(convs)} convs: one 1x1 conv is the "
                     "whole projection")
    conv = convs[0]
    if conv.kernel_size != (1, 1):
        raise NotYet(f"for {case} your shortcut's conv is {conv.kernel_size[0]}x"
                     f"{conv.kernel_size[1]}: use kernel_size=1, a projection that only mixes "
                     "channels (a larger kernel makes the shortcut a second main path)")
    if conv.bias is not None:
        raise NotYet(f"for {case} your 1x1 conv has a bias: use bias=False, since the "
                     "BatchNorm after it subtracts each channel's mean and cancels the bias "
                     "(torchvision's conv1x1 has none)")
    norms = [i for i, m in enumerate(layers) if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        raise NotYet(f"for {case} your shortcut has no BatchNorm after its conv: option B, "
                     "as He et al. 2015 build it (BN right after each convolution, Sec. 3.4) "
                     "and torchvision copies it, normalizes the projection like every other "
                     "conv output, so that it is on F(x)'s scale (F(x) ends in BatchNorm too) "
                     "whatever the conv's weights grow to"
                     + ("" if "A" not in accept else
                        "; a shortcut with no weights at all is option A"))
    if norms[0] < layers.index(conv):
        raise NotYet(f"for {case} the BatchNorm comes before the conv: put it after, so it "
                     "normalizes the projection's output")
    return ShortcutVerdict("B", "a 1x1 conv with the block's stride, no bias, then BatchNorm",
                           params)


def judge_shortcut(module: object, in_channels: int, out_channels: int, stride: int) -> str:
    """The shortcut rule of torchvision and of this series' `BasicBlock`: option B (He et al.
    2015, Sec. 3.3). Where x already has F(x)'s shape, the identity (`None` or
    `nn.Identity()`); where it does not, a 1x1 conv without bias, with the block's stride,
    then BatchNorm. Option A (zero channels) is refused here, with a message that names it:
    notebook 03's Exercise 1 accepts A too, through `judge_shortcut_option`.

    Use it inside an `@exercise` check: it returns a one-line verdict or raises NotYet with
    what exactly is off. Notebook 05 judges shortcuts with it.
    """
    return judge_shortcut_option(module, in_channels, out_channels, stride, ("B",)).message


# names whose use makes make_shortcut a wrapper around a ready-made shortcut
_LIBRARY_SHORTCUTS = ("make_downsample", "ZeroPadShortcut", "BasicBlock", "Bottleneck",
                      "downsample")


def _wrapped_library(fn: Callable) -> str | None:
    """The ready-made shortcut `fn` calls (the library's, or a network's `downsample`)."""
    from .. import blocks, shortcuts

    ours = {id(getattr(shortcuts, n, None)) for n in _LIBRARY_SHORTCUTS} | {
        id(getattr(blocks, n, None)) for n in _LIBRARY_SHORTCUTS}
    ours.discard(id(None))
    scope = getattr(fn, "__globals__", {})
    for name in sorted(names_used(fn)):
        if name in scope:
            if id(scope[name]) in ours:
                return name
        elif name in _LIBRARY_SHORTCUTS:  # an attribute: shortcuts.make_downsample, .downsample
            return name
    return None


@exercise
def check_shortcut(make_shortcut: Callable[[int, int, int], nn.Module | None]) -> str:
    """Exercise 1: `make_shortcut(in_channels, out_channels, stride)` is the shortcut rule,
    option A or option B (judged by `judge_shortcut_option`), and makes a BasicBlock work on
    every case of SHORTCUT_CASES, odd sizes included. A function that calls the library's
    shortcut (or takes a network's `downsample`) is refused."""
    if (name := _wrapped_library(make_shortcut)) is not None:
        raise NotYet(f"your make_shortcut uses {name}, a ready-made shortcut: the exercise is "
                     "to build the module yourself, from torch.nn layers (option B) or a small "
                     "nn.Module of your own (option A)")
    verdicts = {}
    for cin, cout, stride, size in SHORTCUT_CASES:
        module = make_shortcut(cin, cout, stride)
        verdicts[cin, cout, stride] = judge_shortcut_option(module, cin, cout, stride)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            block = BasicBlock(cin, cout, stride)
            x = torch.randn(2, cin, size, size)
        block.downsample = module
        try:
            with torch.no_grad():
                y = block.eval()(x)
        except Exception:  # judged above, so only an unusual module gets here
            raise NotYet(f"BasicBlock({cin}, {cout}, stride={stride}) with your shortcut "
                         f"cannot run on a {size}x{size} input: the shortcut must give F(x)'s "
                         f"shape, ({cout}, {-(-size // stride)}, {-(-size // stride)})") from None
        if tuple(y.shape[1:]) != (cout, -(-size // stride), -(-size // stride)):
            raise NotYet(f"in BasicBlock({cin}, {cout}, stride={stride}) on {size}x{size} the "
                         f"output has shape {tuple(y.shape)}")
    changed = {k: v for k, v in verdicts.items() if v.option != "identity"}
    options = sorted({v.option for v in changed.values()})
    cost_b = sum(option_b_parameters(cin, cout) for cin, cout, _ in changed)
    cost = sum(v.parameters for v in changed.values())
    cases = f"the {len(changed)} blocks that change shape"
    tail = " Every block runs, odd sizes included."
    if options == ["A"]:
        where = sorted({v.padding for v in changed.values()} - {"none needed"})
        return ("option A: the identity where the shapes match; where they differ, x "
                f"subsampled with the block's stride and zero channels appended "
                f"({' or '.join(where)}). Cost: 0 parameters on {cases} (option B would "
                f"add {cost_b:,}). He et al.'s CIFAR nets, their ImageNet ResNet-18/34 of "
                "Table 2 and this series' cifar_resnet use it." + tail)
    if options == ["B"]:
        return ("option B: the identity where the shapes match, a 1x1 conv (the block's "
                "stride, no bias) + BatchNorm where they differ, torchvision's downsample. "
                f"Cost: {cost:,} parameters on {cases} (option A: 0)." + tail)
    return (f"option A on {sum(v.option == 'A' for v in changed.values())} and option B on "
            f"{sum(v.option == 'B' for v in changed.values())} of {cases}: both are correct "
            f"shortcuts, though a network usually keeps one rule. Cost: {cost:,} parameters "
            f"(all A: 0; all B: {cost_b:,})." + tail)


# the prediction of section 5: ResNet-18's feature-map size H (= W) on a 227x227 image
STAGES = ("conv1", "maxpool", "layer1", "layer2", "layer3", "layer4")
PREDICT_INPUT = 227
# (kernel, stride, padding) of the layer that sets each stage's size: the 7x7 stem conv, the
# 3x3 max-pool, then each stage's first 3x3 conv (stride 1 in layer1, 2 after)
_SIZE_RULE = {"conv1": (7, 2, 3), "maxpool": (3, 2, 1), "layer1": (3, 1, 1),
              "layer2": (3, 2, 1), "layer3": (3, 2, 1), "layer4": (3, 2, 1)}


def resnet18_sizes(size: int = PREDICT_INPUT) -> dict[str, int]:
    """The map size after each stage of ResNet-18 on a size x size image, by trace_shapes."""
    from ..models import resnet18
    from ..shape_trace import trace_shapes

    trace = trace_shapes(resnet18(), (1, 3, size, size))
    last = {}
    for row in trace.rows:  # a stage's size is its last block's output size
        stage = row.name.split(".")[0]
        if stage in STAGES and row.output_shape is not None:
            last[stage] = row.output_shape[2]
    return {s: last[s] for s in STAGES}


@exercise
def check_resnet18_sizes(my_sizes: object) -> str:
    """The predicted H (= W) after conv1, maxpool, layer1..layer4 of ResNet-18 on a 227x227
    input, as 6 ints in that order; checked against `trace_shapes`."""
    if my_sizes is Ellipsis or my_sizes is None:
        raise NotYet("write down your 6 sizes first (replace the `...`), then run this cell "
                     "again: the point is to commit before you look")
    try:
        got = tuple(int(s) for s in my_sizes)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise NotYet(f"give 6 ints, the size after {', '.join(STAGES)}; got {my_sizes!r}") from None
    if len(got) != len(STAGES):
        raise NotYet(f"give {len(STAGES)} sizes, one after each of {', '.join(STAGES)}; got "
                     f"{len(got)}")
    want = resnet18_sizes()
    previous = PREDICT_INPUT
    for stage, size in zip(STAGES, got, strict=True):
        if size != want[stage]:
            k, s, p = _SIZE_RULE[stage]
            rule = f"floor(({previous} + 2*{p} - {k}) / {s}) + 1 = {want[stage]}"
            halved = (". On an odd size a stride-2 layer rounds up, ceil(H/2): the floor "
                      "applies before the + 1. Did you round down at the other stride-2 layers "
                      "too?") if s == 2 and previous % 2 and size == previous // 2 else ""
            raise NotYet(f"after {stage} the map is {want[stage]}x{want[stage]}, not {size}: "
                         f"{rule}{halved}")
        previous = size
    return (f"{' -> '.join(str(want[s]) for s in STAGES)}: every stride-2 layer gives "
            "ceil(H/2) on an odd size, so 227 does not end at 7x7 as 224 does.")
