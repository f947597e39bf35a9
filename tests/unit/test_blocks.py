"""Blocks: the residual formula F(x) + shortcut, the plain twins, zero-init, checked directly."""

from functools import partial

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
    ResidualBlock,
    conv1x1,
    conv3x3,
)
from resnet_edu.residual_trace import residual_additions


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


BLOCKS = [BasicBlock, Bottleneck, PreActBlock]


def _make(block, residual=True, stride=1, norm_layer=None):
    """A block of each type that keeps 32 channels (Bottleneck: 8 planes, times 4)."""
    planes = 8 if block is Bottleneck else 32
    return block(32, planes, stride, norm_layer=norm_layer, residual=residual)


@pytest.mark.parametrize(
    "block, alias", [(BasicBlock, PlainBasicBlock), (Bottleneck, PlainBottleneck),
                     (PreActBlock, PlainPreActBlock)],
)
def test_plain_block_is_the_block_without_its_shortcut(block, alias):
    assert isinstance(alias(32, 8), block) and not alias(32, 8).residual
    with pytest.raises(ValueError, match=f"a {alias.__name__} has no shortcut: residual must "
                                         f"be False, got True; use {block.__name__}"):
        alias(32, 8, residual=True)
    plain = alias(32, 8)  # the same layers and names as the block built with residual=False
    assert plain.state_dict().keys() == block(32, 8, residual=False).state_dict().keys()
    torch.manual_seed(0)
    r = _make(block).eval()
    torch.manual_seed(0)
    p = _make(block, residual=False).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(p.residual_branch(x), r.residual_branch(x))
        out = p(x)
    expected = r.residual_branch(x).detach()
    torch.testing.assert_close(out, expected if block is PreActBlock else torch.relu(expected))
    # traced: the residual block adds its input, the plain one adds nothing
    assert len(residual_additions(r, x)) == 1 and residual_additions(p, x) == []
    # no shortcut at all, not even a projection where the shape changes
    assert _make(block, residual=False, stride=2).downsample is None
    assert "residual=False" in repr(p) and "residual=False" not in repr(r)


def test_residual_must_be_a_bool():
    with pytest.raises(ValueError, match="residual must be True or False, got 'no'"):
        BasicBlock(8, 8, residual="no")


def _loss(block, x):
    return (block(x) * torch.linspace(-1, 1, x.numel()).view_as(x)).sum()


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("block", BLOCKS)
def test_zero_init_starts_at_identity_and_every_branch_parameter_learns(block, norm):
    """zero_init_last gives F(x) = 0; the zeroed layer gets a gradient at once, and after one
    SGD step every parameter of the branch does (a zeroed BN scale feeding a ReLU would leave
    them all at exactly 0 forever)."""
    norm_layer = nn.BatchNorm2d if norm == "batch" else partial(nn.GroupNorm, 4)
    torch.manual_seed(0)
    blk = _make(block, norm_layer=norm_layer)
    blk.zero_init_last()
    x = torch.randn(4, 32, 6, 6)
    with torch.no_grad():
        assert torch.count_nonzero(blk.residual_branch(x)) == 0
        torch.testing.assert_close(blk(x), x if block is PreActBlock else torch.relu(x))
    _loss(blk, x).backward()
    assert torch.count_nonzero(blk.last_layer().weight.grad) > 0
    torch.optim.SGD(blk.parameters(), lr=0.1).step()
    blk.zero_grad()
    _loss(blk, x).backward()
    dead = [n for n, p in blk.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []


@pytest.mark.parametrize("block", BLOCKS)
def test_zero_init_without_a_learnable_scale_raises(block):
    blk = _make(block, norm_layer=nn.Identity)
    if block is PreActBlock:  # its last layer is a conv, which always has a weight
        blk.zero_init_last()
        assert not blk.conv2.weight.any()
    else:
        with pytest.raises(ValueError, match="without a learnable weight"):
            blk.zero_init_last()


def test_conv_helpers_keep_or_halve_size():
    x = torch.randn(1, 3, 8, 8)
    assert conv3x3(3, 5)(x).shape == (1, 5, 8, 8)
    assert conv3x3(3, 5, 2)(x).shape == (1, 5, 4, 4)
    assert conv1x1(3, 5, 2)(x).shape == (1, 5, 4, 4)
    assert conv3x3(3, 5).bias is None  # BN follows, so no bias


def test_gradient_reaches_the_input_through_the_identity():
    """With F's last conv zeroed, dy/dx of a pre-activation block is exactly the identity."""
    blk = PreActBlock(8, 8)
    blk.zero_init_last()
    x = torch.randn(1, 8, 4, 4, requires_grad=True)
    blk(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_plain_nets_are_built_of_plain_blocks_that_isinstance_finds():
    from resnet_edu.models import cifar_resnet, resnet18

    plain = cifar_resnet(20, residual=False)
    blocks = [m for m in plain.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 9 and all(isinstance(b, PlainBasicBlock) for b in blocks)
    assert not any(isinstance(m, PlainBasicBlock) for m in cifar_resnet(20).modules())
    preact = cifar_resnet(20, residual=False, preact=True)
    assert sum(isinstance(m, PlainPreActBlock) for m in preact.modules()) == 9
    # torchvision's names: the plain net's state_dict is the residual net's minus shortcuts
    assert set(plain.state_dict()) <= set(cifar_resnet(20, shortcut="B").state_dict())
    assert isinstance(resnet18(residual=False).layer1[0], PlainBasicBlock)
    # built directly, a block without its shortcut is its plain twin too
    assert type(BasicBlock(8, 8, residual=False)) is PlainBasicBlock
    assert type(Bottleneck(8, 2, residual=False)) is PlainBottleneck
    assert type(PreActBlock(8, 8, residual=False)) is PlainPreActBlock
    assert type(BasicBlock(8, 8)) is BasicBlock
