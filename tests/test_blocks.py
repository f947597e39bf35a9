"""Blocks and shortcuts: the residual formula and the paper's options, checked directly."""

import pytest
import torch
from torch import nn

from resnet_edu.blocks import (
    BasicBlock,
    Bottleneck,
    PlainBasicBlock,
    PlainBottleneck,
    PlainPreActBlock,
    PreActBlock,
    conv1x1,
    conv3x3,
    plain_twin,
)
from resnet_edu.shortcuts import ZeroPadShortcut, make_downsample, needs_projection


@pytest.mark.parametrize(
    "cin, cout, stride, expected",
    [(64, 64, 1, False), (64, 128, 1, True), (64, 64, 2, True), (64, 128, 2, True)],
)
def test_needs_projection(cin, cout, stride, expected):
    assert needs_projection(cin, cout, stride) is expected


@pytest.mark.parametrize("block", [BasicBlock, PreActBlock])
def test_block_is_f_plus_shortcut(block):
    blk = block(16, 32, stride=2).eval()
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        y = blk(x)
        f, s = blk.residual_branch(x), blk.shortcut(x)
    assert y.shape == (2, 32, 5, 5) == f.shape == s.shape
    expected = f + s if block is PreActBlock else torch.relu(f + s)  # post-activation ReLU
    torch.testing.assert_close(y, expected)


def test_bottleneck_expands_by_four():
    blk = Bottleneck(64, 16)
    assert blk.expansion == 4 and blk.out_channels == 64
    assert blk.downsample is None  # 64 -> 16*4 at stride 1 needs no projection
    assert blk(torch.randn(1, 64, 8, 8)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize(
    "residual, plain", [(BasicBlock, PlainBasicBlock), (Bottleneck, PlainBottleneck),
                        (PreActBlock, PlainPreActBlock)],
)
def test_plain_twin_is_the_block_without_its_shortcut(residual, plain):
    assert plain_twin(residual) is plain and plain_twin(plain) is plain
    torch.manual_seed(0)
    r = residual(32, 8 if residual is Bottleneck else 32).eval()
    torch.manual_seed(0)
    p = plain(32, 8 if residual is Bottleneck else 32).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(p.residual_branch(x), r.residual_branch(x))
        out = p(x)
    expected = r.residual_branch(x).detach()
    torch.testing.assert_close(out, expected if residual is PreActBlock else torch.relu(expected))


def test_option_a_subsamples_and_zero_pads():
    x = torch.randn(2, 4, 7, 7)
    y = ZeroPadShortcut(4, 6, stride=2)(x)
    assert y.shape == (2, 6, 4, 4)  # same size as a 3x3/pad-1/stride-2 conv output
    assert conv3x3(4, 6, stride=2)(x).shape == y.shape
    torch.testing.assert_close(y[:, :4], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 4:]) == 0
    assert sum(p.numel() for p in ZeroPadShortcut(4, 6, 2).parameters()) == 0


def test_shortcut_options():
    assert make_downsample(16, 16, 1, "A") is None
    assert make_downsample(16, 16, 1, "B") is None
    c = make_downsample(16, 16, 1, "C")
    assert isinstance(c[0], nn.Conv2d) and c[0].kernel_size == (1, 1)
    b = make_downsample(16, 32, 2, "B")
    assert b[0].stride == (2, 2) and isinstance(b[1], nn.BatchNorm2d)
    d = make_downsample(16, 32, 2, "D")
    assert isinstance(d[0], nn.AvgPool2d) and d[1].stride == (1, 1)
    x = torch.randn(1, 16, 7, 7)
    assert b(x).shape == d(x).shape == conv3x3(16, 32, 2)(x).shape
    with pytest.raises(ValueError, match="shortcut must be one of A, B, C, D"):
        make_downsample(16, 32, 2, "Z")
    with pytest.raises(ValueError, match="only add channels"):
        ZeroPadShortcut(32, 16, 1)


def test_conv_helpers_keep_or_halve_size():
    x = torch.randn(1, 3, 8, 8)
    assert conv3x3(3, 5)(x).shape == (1, 5, 8, 8)
    assert conv3x3(3, 5, 2)(x).shape == (1, 5, 4, 4)
    assert conv1x1(3, 5, 2)(x).shape == (1, 5, 4, 4)
    assert conv3x3(3, 5).bias is None  # BN follows, so no bias


def test_gradient_reaches_the_input_through_the_identity():
    """With F's last BN zeroed, dy/dx is exactly the identity (before the final ReLU)."""
    blk = PreActBlock(8, 8)
    blk.zero_init_last_norm()
    x = torch.randn(1, 8, 4, 4, requires_grad=True)
    blk(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
