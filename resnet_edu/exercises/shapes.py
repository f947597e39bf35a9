"""Checks for notebook 03 (shapes and shortcuts). Real PyTorch modules are the oracle."""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable
from itertools import product

import torch
from torch import nn

from ..blocks import BasicBlock
from ..shapes import conv_output_size
from ..shortcuts import needs_projection
from . import NotYet, exercise

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
            raise NotImplementedError
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


# the modules a shortcut must not contain: it stays linear (He et al. 2015, Eq. 2)
_NONLINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.Tanh)
_POOLS = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _spatial_hint(module: nn.Module, stride: int) -> str:
    """Why a shortcut's H, W differ from F(x)'s: its conv's stride, or its padding."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if convs and all(c.stride == (stride, stride) for c in convs):
        padded = [c for c in convs if c.padding != tuple((k - 1) // 2 for k in c.kernel_size)]
        if padded:
            pad = padded[0].padding
            pad = pad[0] if isinstance(pad, tuple) else repr(pad)
            return (f"the stride is right, but padding={pad} adds a border "
                    "of zeros the main path does not have: a 1x1 conv needs padding=0")
    return "give the 1x1 conv the block's stride"


def judge_shortcut(module: object, in_channels: int, out_channels: int, stride: int) -> str:
    """The one rule for a shortcut in this series: torchvision's option B (He et al. 2015,
    Sec. 3.3). Where x already has F(x)'s shape, the identity (`None` or `nn.Identity()`);
    where it does not, a 1x1 conv without bias, with the block's stride, then BatchNorm.

    Use it inside an `@exercise` check: it returns a one-line verdict or raises NotYet with
    what exactly is off. Notebook 03 (Exercise 1) and notebook 05 judge shortcuts with it.
    """
    case = f"in_channels={in_channels}, out_channels={out_channels}, stride={stride}"
    if module is not None and not isinstance(module, nn.Module):
        raise NotYet(f"for {case} you return a {type(module).__name__}: return an nn.Module "
                     "(nn.Identity(), nn.Sequential(...)) or None, so the block registers "
                     "its weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x, x2 = torch.randn(2, 2, in_channels, 8, 8)
        main = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        with torch.no_grad():
            want = tuple(main(x).shape)
    params = module is not None and any(True for _ in module.parameters())
    if not needs_projection(in_channels, out_channels, stride):
        if params:
            raise NotYet(f"for {case} your shortcut has parameters, but x already has F(x)'s "
                         "shape: return None (the identity) here. A projection on every block "
                         "is option C, which buys little for its parameters (He et al. 2015, "
                         "Table 3)")
        if module is not None:
            with torch.no_grad():
                same = module.eval()(x)
            if not (isinstance(same, torch.Tensor) and same.shape == x.shape
                    and torch.equal(same, x)):
                raise NotYet(f"for {case} x already has F(x)'s shape, so the shortcut is x "
                             "itself: return None or nn.Identity()")
        return "the identity, since x already has F(x)'s shape"
    if module is None or isinstance(module, nn.Identity):
        raise NotYet(f"for {case} you return the identity, but x ({in_channels} channels, "
                     f"8x8) cannot be added to F(x) ({want[1]} channels, {want[2]}x{want[3]}): "
                     "it needs a projection")
    nonlinear = [type(m).__name__ for m in module.modules() if isinstance(m, _NONLINEAR)]
    if nonlinear:
        raise NotYet(f"for {case} your shortcut contains {', '.join(nonlinear)}: a shortcut "
                     "must stay linear, W_s x (He et al. 2015, Eq. 2)")
    module.eval()
    with torch.no_grad():
        got, got2 = module(x), module(x2)
    if tuple(got.shape) != want:
        what = []
        if got.shape[1] != want[1]:
            what.append(f"out_channels={out_channels} for the 1x1 conv")
        if tuple(got.shape[2:]) != want[2:]:
            what.append(_spatial_hint(module, stride))
        raise NotYet(f"for {case} your shortcut maps {tuple(x.shape)} to {tuple(got.shape)}, "
                     f"but the main path F(x) gives {want}: " + "; ".join(what))
    if torch.allclose(got, got2):
        raise NotYet(f"for {case} the shortcut's output does not depend on x: it must carry "
                     "x (a projection of it) past the convs")
    layers = [m for m in module.modules() if not any(True for _ in m.children())]
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    pools = [type(m).__name__ for m in layers if isinstance(m, _POOLS)]
    if pools:
        raise NotYet(f"for {case} your shortcut pools ({', '.join(pools)}) before projecting: "
                     "that is ResNet-D (He et al. 2019). The rule here is torchvision's option "
                     "B: the 1x1 conv itself takes the block's stride")
    if not convs:
        raise NotYet(f"for {case} your shortcut has no conv (zero channels are option A): "
                     "option B projects with a 1x1 conv, which learns how to mix the channels")
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
        raise NotYet(f"for {case} your shortcut has no BatchNorm after its conv: option B "
                     "(torchvision) normalizes the projection like every other conv output, "
                     "nn.Sequential(nn.Conv2d(...), nn.BatchNorm2d(out_channels))")
    if norms[0] < layers.index(conv):
        raise NotYet(f"for {case} the BatchNorm comes before the conv: put it after, so it "
                     "normalizes the projection's output")
    return "a 1x1 conv with the block's stride, no bias, then BatchNorm"


@exercise
def check_shortcut(make_shortcut: Callable[[int, int, int], nn.Module | None]) -> str:
    """Exercise 1: `make_shortcut(in_channels, out_channels, stride)` is the shortcut rule
    (option B, judged by `judge_shortcut`), and makes a BasicBlock work on every case of
    SHORTCUT_CASES, odd sizes included."""
    for cin, cout, stride, size in SHORTCUT_CASES:
        module = make_shortcut(cin, cout, stride)
        judge_shortcut(module, cin, cout, stride)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            block = BasicBlock(cin, cout, stride)
            x = torch.randn(2, cin, size, size)
        block.downsample = module
        with torch.no_grad():
            y = block.eval()(x)
        if tuple(y.shape[1:]) != (cout, -(-size // stride), -(-size // stride)):
            raise NotYet(f"in BasicBlock({cin}, {cout}, stride={stride}) on {size}x{size} the "
                         f"output has shape {tuple(y.shape)}")
    return ("the identity where the shapes match, a 1x1 conv (the block's stride, no bias) + "
            "BatchNorm where they differ: option B, torchvision's downsample. Every block runs, "
            "odd sizes included.")


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
