"""The traced definition of a residual block: additions found by what they compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_edu import models
from resnet_edu.blocks import BasicBlock, PlainBasicBlock
from resnet_edu.residual_trace import residual_additions, residual_block_names
from resnet_edu.stacks import LinearStack, is_identity_shortcut

from helpers import Adds, Branch

X = torch.randn(2, 4, 8, 8)


@pytest.mark.parametrize("forward, shortcut", [
    (lambda s, x: s.f(x) + x, []),
    (lambda s, x: torch.add(s.f(x), x), []),
    (lambda s, x: x + s.f(x), []),
    (lambda s, x: sum([s.f(x), x]), []),
    (lambda s, x: s.f(x).add_(x), []),
    (lambda s, x: s.f(x) + F.relu(x), ["relu()"]),
    (lambda s, x: s.f(x) + torch.relu(x), ["relu()"]),
    (lambda s, x: s.f(x) + x.relu(), ["relu()"]),
    (lambda s, x: s.f(x) + F.relu(s.proj(x)), ["conv2d()", "relu()"]),
], ids=["plus", "torch.add", "x_first", "sum", "add_", "F.relu", "torch.relu", ".relu()",
        "proj_relu"])
def test_each_way_of_adding_is_found_with_its_shortcut_ops(forward, shortcut):
    (add,) = residual_additions(Adds(forward), X)
    assert add.block == "" and add.fork_is_block_input
    assert [s.label for s in add.shortcut] == shortcut
    assert add.identity == (not shortcut)
    assert add.shortcut_activations == tuple(s for s in shortcut if "relu" in s)
    assert [s.op for s in add.branch].count("conv2d") == 2


def test_inplace_add_then_inplace_relu_is_one_block():
    def forward(s, x):
        out = s.f(x)
        out += x
        return F.relu(out, inplace=True)

    (add,) = residual_additions(Adds(forward), X)
    assert add.identity and add.branch_shape == tuple(X.shape)


@pytest.mark.parametrize("forward", [
    lambda s, x: x + x,  # no weight layer on either side
    lambda s, x: s.proj(x) + s.f.body[0](x),  # two parallel branches, one conv each
    lambda s, x: s.f(x) + s.f(x).mean((2, 3), keepdim=True),  # a broadcast add
    lambda s, x: s.f(x) + torch.ones_like(x[:1]).expand_as(x) * 0,  # a constant term
], ids=["x+x", "parallel", "broadcast", "constant"])
def test_additions_that_are_not_residual(forward):
    assert residual_additions(Adds(forward), X) == []


def test_the_block_is_the_smallest_module_holding_the_addition_and_the_fork():
    class AddModule(nn.Module):  # a helper module that only adds: not the block
        def forward(self, a, b):
            return a + b

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.add = Branch(), AddModule()

        def forward(self, x):
            return self.add(self.f(x), x)

    net = nn.Sequential(nn.Conv2d(4, 4, 1), Block(), Block())
    assert residual_block_names(net, X) == ["1", "2"]


def test_identity_shortcut_and_plain_twins_by_tracing():
    x = torch.randn(2, 8, 8, 8)
    assert is_identity_shortcut(BasicBlock(8, 8), x)
    assert not is_identity_shortcut(BasicBlock(8, 8, shortcut="C"), x)  # W_s x
    assert not is_identity_shortcut(PlainBasicBlock(8, 8), x)  # no addition at all
    stack = LinearStack(width=8, depth=2)
    v = torch.randn(3, 8, dtype=torch.float64)
    assert is_identity_shortcut(stack.build(True)[0], v)  # x @ W.T + x: W seen through .T
    assert not is_identity_shortcut(stack.build(False)[0], v)


def test_tracing_leaves_the_model_as_it_was():
    model = models.cifar_resnet(8).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    residual_additions(model, torch.randn(2, 3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_the_branch_last_layer_skips_dropout_and_scaling_but_not_a_gate():
    def relu_then_dropout(s, x):
        return F.dropout(F.relu(s.f(x)), 0.1) * 0.5 + x

    def squeeze_excite(s, x):  # out * sigmoid(...): a gate that uses the data, a layer
        out = s.f(x)
        return out * torch.sigmoid(s.proj(out.mean((2, 3), keepdim=True))) + x

    (add,) = residual_additions(Adds(relu_then_dropout), X)
    assert add.branch_last_layer.kind == "activation" and add.branch_last_layer.op == "relu"
    (add,) = residual_additions(Adds(squeeze_excite), X)
    assert add.branch_last_layer.op == "mul"  # Tensor.__mul__ reaches the mode as mul
    (add,) = residual_additions(Adds(lambda s, x: s.f(x) + x), X)
    assert add.branch_last_layer.kind == "norm"
