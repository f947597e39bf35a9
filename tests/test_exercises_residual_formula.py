"""Exercise checks of notebook 01: right answers pass, the usual wrong ones get their hint."""


import torch
from torch import nn

from resnet_edu.exercises import Feedback
from resnet_edu.exercises.residual_formula import (
    check_expected_gain,
    check_make_identity,
    check_predict_gradient,
    check_shortcut_parameters,
)


def _not_attempted(*args):
    raise NotImplementedError


def test_make_identity_accepts_zeroing_the_last_conv():
    fb = check_make_identity(lambda b: nn.init.zeros_(b.conv2.weight))
    assert isinstance(fb, Feedback) and fb.passed, fb


def test_make_identity_accepts_zeroing_the_whole_last_norm():
    def zero_bn2(block):
        nn.init.zeros_(block.bn2.weight)
        nn.init.zeros_(block.bn2.bias)

    assert check_make_identity(zero_bn2).passed


def test_make_identity_explains_what_is_wrong():
    unchanged = check_make_identity(lambda b: None)
    assert not unchanged.passed and "unchanged" in unchanged.message
    bn_weight_only = check_make_identity(lambda b: nn.init.zeros_(b.bn2.weight))
    assert not bn_weight_only.passed and "BatchNorm" in bn_weight_only.message

    def two_layers(block):
        nn.init.zeros_(block.conv1.weight)
        nn.init.zeros_(block.conv2.weight)

    assert "2 layers" in check_make_identity(two_layers).message
    assert "not attempted" in check_make_identity(_not_attempted).message


def test_make_identity_leaves_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_make_identity(lambda b: nn.init.zeros_(b.conv2.weight))
    torch.testing.assert_close(torch.rand(3), expected)


def test_shortcut_parameters():
    # oracle: a 1x1 conv 64->128 without bias, and BatchNorm(128)'s weight and bias
    projection = nn.Conv2d(64, 128, 1, bias=False).weight.numel() + 2 * 128
    assert check_shortcut_parameters(0, projection).passed
    assert "fill in" in check_shortcut_parameters(..., ...).message
    assert "Does adding" in check_shortcut_parameters(64, projection).message
    assert "BatchNorm" in check_shortcut_parameters(0, 64 * 128).message
    assert not check_shortcut_parameters(0, projection + 1).passed
    assert not check_shortcut_parameters(0.0, float(projection)).passed


def _right_gradient(weights, g):
    for w in reversed(weights):
        g = g + w.T @ g
    return g


def test_predict_gradient_accepts_the_chain_rule_and_names_each_slip():
    assert check_predict_gradient(_right_gradient).passed

    def plain(weights, g):
        for w in reversed(weights):
            g = w.T @ g
        return g

    def no_transpose(weights, g):
        for w in reversed(weights):
            g = g + w @ g
        return g

    def wrong_order(weights, g):
        for w in weights:
            g = g + w.T @ g
        return g

    assert "identity term is missing" in check_predict_gradient(plain).message
    assert "transposed" in check_predict_gradient(no_transpose).message
    assert "wrong order" in check_predict_gradient(wrong_order).message
    assert "shape" in check_predict_gradient(lambda w, g: g[:2]).message
    assert "max |yours - autograd|" in check_predict_gradient(lambda w, g: 2 * g).message
    assert "not attempted" in check_predict_gradient(_not_attempted).message


def test_expected_gain():
    def right(scale, depth, residual):
        return (1 + scale**2) ** (depth / 2) if residual else scale**depth

    assert check_expected_gain(right).passed
    additive = check_expected_gain(lambda s, d, r: 1 + d * s if r else s**d)
    assert "multiply" in additive.message
    bound = check_expected_gain(lambda s, d, r: (1 + s) ** d if r else s**d)
    assert "upper bound" in bound.message
    assert "plain stack" in check_expected_gain(lambda s, d, r: 1.0).message
    assert "return a float" in check_expected_gain(lambda s, d, r: "1").message
