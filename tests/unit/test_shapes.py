"""The output-size rule against nn.Conv2d and the pools, the tracer against modules run by
hand (ours and torchvision's), and the block calculator against the modules it describes."""

from itertools import product

import matplotlib
import pytest
import torch
from torch import nn

from resnet_edu import models
from resnet_edu.blocks import BasicBlock
from resnet_edu.shapes import (
    CALCULATOR_SHORTCUTS,
    BlockSpec,
    block_shapes,
    conv_output_size,
    describe_block,
    kernel_windows,
    pixels_read,
    window_diagram,
)
from resnet_edu.shortcuts import make_downsample

matplotlib.use("Agg")


CONV_GRID = [
    (h, k, s, p, d)
    for h, k, s, p, d in product((1, 2, 5, 7, 8, 15, 32), (1, 2, 3, 5, 7), (1, 2, 3),
                                 (0, 1, 3), (1, 2))
    if d * (k - 1) + 1 <= h + 2 * p
]


def _conv(h: int, k: int, s: int, p: int, d: int) -> nn.Conv2d:
    return nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, bias=False)


def test_conv_output_size_matches_conv2d_over_a_grid():
    assert len(CONV_GRID) > 300
    for h, k, s, p, d in CONV_GRID:
        with torch.no_grad():
            out = _conv(h, k, s, p, d)(torch.zeros(1, 1, h, h))
        assert out.shape[2:] == (conv_output_size(h, k, s, p, d),) * 2, (h, k, s, p, d)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("pool", [nn.MaxPool2d, nn.AvgPool2d])
def test_conv_output_size_matches_pools(pool, ceil_mode):
    # pools allow padding up to half the kernel; ceil_mode must not start in the padding
    for h, k, s in product((1, 2, 5, 7, 8, 15), (1, 2, 3, 4), (1, 2, 3)):
        for p in range(k // 2 + 1):
            if k > h + 2 * p:
                continue
            with torch.no_grad():
                out = pool(k, s, p, ceil_mode=ceil_mode)(torch.zeros(1, 1, h, h))
            want = conv_output_size(h, k, s, p, ceil_mode=ceil_mode)
            assert out.shape[2] == want, (pool.__name__, h, k, s, p, ceil_mode)


def test_stride_two_halves_rounding_down_never_doubles():
    for h in range(2, 40):
        assert conv_output_size(h, 3, 2, 1) == (h + 1) // 2  # ceil(H/2) for 3x3, padding 1
        assert conv_output_size(h, 1, 2, 0) == (h + 1) // 2  # the 1x1 shortcut agrees
    assert conv_output_size(7, 3, 2, 1) == 4


@pytest.mark.parametrize("args", [
    (0, 3, 1, 1), (8, 0, 1, 1), (8, 3, 0, 1), (8, 3, 1, -1), (8, 3, 1, 1, 0), (2, 5, 1, 0),
    (8.0, 3, 1, 1), (True, 3, 1, 1), (3, 3, 1, 0, 2),
])
def test_conv_output_size_rejects_bad_input(args):
    with pytest.raises(ValueError, match=r"must be|kernel covers"):
        conv_output_size(*args)


@pytest.mark.parametrize("h,k,s,p,d", [(8, 1, 2, 0, 1), (8, 3, 2, 1, 1), (7, 3, 2, 1, 1),
                                        (9, 3, 1, 1, 2), (6, 2, 2, 0, 1), (5, 5, 3, 2, 1)])
def test_pixels_read_is_the_gradient_of_a_ones_conv(h, k, s, p, d):
    x = torch.zeros(1, 1, h, h, requires_grad=True)
    conv = _conv(h, k, s, p, d)
    nn.init.ones_(conv.weight)
    conv(x).sum().backward()  # d(sum)/dx_ij = number of windows that read pixel (i, j)
    assert torch.equal(pixels_read(h, k, s, p, d), x.grad[0, 0].long())


def test_kernel_windows_and_diagram_agree_with_the_size():
    windows = kernel_windows(7, 3, 2, 1)
    assert len(windows) == conv_output_size(7, 3, 2, 1)
    assert windows[0][0] == -1 and windows[-1][-1] == 7  # both ends read the padding
    diagram = window_diagram(7, 3, 2, 1).splitlines()
    assert len(diagram) == 1 + len(windows)
    assert all(line.count("[]") == 3 for line in diagram[1:])


def _main_path(spec: BlockSpec) -> nn.Sequential:
    conv1 = nn.Sequential(nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel,
                                    spec.stride, spec.padding, bias=False),
                          nn.BatchNorm2d(spec.out_channels))
    conv2 = nn.Sequential(nn.Conv2d(spec.out_channels, spec.out_channels, spec.kernel, 1,
                                    spec.padding, bias=False),
                          nn.BatchNorm2d(spec.out_channels))
    return nn.Sequential(conv1, conv2).eval()


def _real_block(spec: BlockSpec):
    if spec.shortcut == "none":
        short = None
    else:
        short = make_downsample(spec.in_channels, spec.out_channels, spec.stride,
                                spec.shortcut)
    return _main_path(spec), short


CALC_GRID = [
    BlockSpec(size, cin, cout, stride, kernel, padding, option)
    for size, (cin, cout), stride, (kernel, padding), option in product(
        (7, 8), ((16, 16), (16, 32), (32, 16)), (1, 2, 3), ((3, 1), (1, 0), (3, 0)),
        CALCULATOR_SHORTCUTS)
]


def test_block_shapes_match_real_modules():
    for spec in CALC_GRID:
        try:
            got = block_shapes(spec)
        except ValueError as e:  # conv2's kernel no longer fits: PyTorch refuses too
            if "kernel covers" not in str(e):
                raise
            main_path = _main_path(spec)
            with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
                main_path(torch.zeros(1, spec.in_channels, spec.size, spec.size))
            continue
        if spec.shortcut == "A" and spec.out_channels < spec.in_channels \
                and (spec.stride != 1 or spec.in_channels != spec.out_channels):
            with pytest.raises(ValueError, match="option A can only add channels"):
                _real_block(spec)
            assert not got.addable and got.shortcut is None
            continue
        main_path, short = _real_block(spec)
        x = torch.zeros(1, spec.in_channels, spec.size, spec.size)
        with torch.no_grad():
            main = tuple(main_path(x).shape[1:])
            s = tuple((x if short is None else short.eval()(x)).shape[1:])
        assert (got.main, got.shortcut, got.addable) == (main, s, main == s), spec
        assert got.main_params == models.count_parameters(main_path), spec
        assert got.shortcut_params == (0 if short is None else models.count_parameters(short))
        assert got.main_macs == _conv_macs(main_path, x), spec
        assert got.shortcut_macs == (0 if short is None else _conv_macs(short, x)), spec
        assert ("cannot add" in describe_block(spec)) == (not got.addable)


def _conv_macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of every conv in `module` on `x`, counted from the real output shapes."""
    total = 0

    def count(conv, _inputs, out):
        nonlocal total
        k = conv.kernel_size[0] * conv.kernel_size[1]
        total += out[0].numel() * k * conv.in_channels // conv.groups

    handles = [m.register_forward_hook(count) for m in module.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        module.eval()(x)
    for h in handles:
        h.remove()
    return total


def test_calculator_on_the_naive_block_and_the_fix():
    naive = block_shapes(BlockSpec(32, 16, 32, 2, shortcut="none"))
    assert not naive.addable and "channels differ" in naive.reason
    assert "spatial sizes differ" in naive.reason
    fixed = block_shapes(BlockSpec(32, 16, 32, 2, shortcut="B"))
    block = BasicBlock(16, 32, 2)
    assert fixed.addable
    assert fixed.main_params + fixed.shortcut_params == models.count_parameters(block)
    # 16 -> 32 channels, 16x16 out: conv1 16*9*32*256, conv2 32*9*32*256; the 1x1 16*32*256
    assert (fixed.main_macs, fixed.shortcut_macs) == (3_538_944, 131_072)
    assert "131,072 multiply-adds" in describe_block(BlockSpec(32, 16, 32, 2, shortcut="B"))


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"stride": 0}, {"padding": -1},
                                    {"shortcut": "E"}, {"in_channels": 1.5}])
def test_block_spec_rejects_bad_input(kwargs):
    with pytest.raises(ValueError, match=r"must be (an integer|one of)"):
        BlockSpec(**kwargs)
