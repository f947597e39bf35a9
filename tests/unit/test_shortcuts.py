"""The shortcut options of He et al. 2015 (A: subsample and zero-pad, B: project where shapes
change, C: project everywhere) and ResNet-D, and the rule that says when a projection is
needed."""


import pytest
import torch
from torch import nn

from resnet_edu.blocks import (
    conv3x3,
)
from resnet_edu.shortcuts import ZeroPadShortcut, make_downsample, needs_projection


@pytest.mark.parametrize(
    "cin, cout, stride, expected",
    [(64, 64, 1, False), (64, 128, 1, True), (64, 64, 2, True), (64, 128, 2, True)],
)
def test_needs_projection(cin, cout, stride, expected):
    assert needs_projection(cin, cout, stride) is expected


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
