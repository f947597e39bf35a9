"""Exercise checks of notebook 01: right answers pass, the usual wrong ones get their hint."""


import torch
from torch import nn

from resnet_edu.course.exercise import Feedback
from resnet_edu.course.nb01_residual_formula import (
    check_block_gradient,
    check_expected_gain,
    check_gain_prediction,
    check_make_identity,
    check_predict_gradient,
    check_shortcut_parameters,
)
from resnet_edu.models import resnet18
from resnet_edu.stacks import LinearStack, jacobian_gains


def _not_attempted(*args):
    raise NotImplementedError


def test_make_identity_accepts_zeroing_the_last_conv():
    fb = check_make_identity(lambda b: nn.init.zeros_(b.conv2.weight))
    assert isinstance(fb, Feedback) and fb.passed, fb


def test_make_identity_refuses_a_zeroed_last_norm_whose_branch_cannot_learn():
    # bn2 at zero (or pushed below zero) feeds ReLU a non-positive input: F(x) = 0, so the
    # block is the identity, but ReLU's derivative there is 0 and no weight of F ever gets a
    # gradient again (blocks.py, PreActBlock.last_layer)
    def zero_bn2(block):
        nn.init.zeros_(block.bn2.weight)
        nn.init.zeros_(block.bn2.bias)

    def negative_bn2(block):
        nn.init.zeros_(block.bn2.weight)
        nn.init.constant_(block.bn2.bias, -1.0)

    def zero_module(block):
        class Zero(nn.Module):
            def forward(self, x):
                return torch.zeros_like(x)

        block.bn2 = Zero()

    for answer in (zero_bn2, negative_bn2, zero_module):
        feedback = check_make_identity(answer)
        assert not feedback.passed, answer.__name__
        assert "is the identity" in feedback.message and "gradient" in feedback.message
        assert "derivative of a ReLU" in feedback.message
        assert "conv2" not in feedback.message  # the hint does not give the answer away


def test_make_identity_refuses_a_frozen_layer():
    def frozen(block):
        nn.init.zeros_(block.conv2.weight)
        block.conv2.weight.requires_grad_(False)

    feedback = check_make_identity(frozen)
    assert not feedback.passed and "conv2.weight no longer requires a gradient" in \
        feedback.message


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


def test_shortcut_parameters_of_resnet18():
    # oracle: a 1x1 conv without bias and a BatchNorm (weight, bias) for each block that
    # changes the shape: the first block of layer2, layer3 and layer4
    model = resnet18()
    projections = [b for b in (getattr(model, f"layer{i}")[0] for i in range(1, 5))
                   if b.downsample is not None]
    assert [(b.inplanes, b.planes) for b in projections] == [(64, 128), (128, 256), (256, 512)]
    right = sum(ci * co + 2 * co for ci, co in [(64, 128), (128, 256), (256, 512)])
    assert check_shortcut_parameters(right).passed
    assert "fill in" in check_shortcut_parameters(...).message
    assert "whole number" in check_shortcut_parameters(float(right)).message
    assert "one projection" in check_shortcut_parameters(64 * 128 + 2 * 128).message
    convs_only = 64 * 128 + 128 * 256 + 256 * 512
    assert "BatchNorm" in check_shortcut_parameters(convs_only).message
    with_layer1 = right + 64 * 64 + 2 * 64
    assert "layer1" in check_shortcut_parameters(with_layer1).message
    every_block = right + sum(c * c + 2 * c for c in (128, 256, 512))
    assert "only the first block" in check_shortcut_parameters(every_block).message
    assert "print(resnet18())" in check_shortcut_parameters(right + 1).message


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
    assert "pointed along v" in bound.message
    assert "E[v" not in bound.message  # the hint does not spell out the derivation
    assert "plain stack" in check_expected_gain(lambda s, d, r: 1.0).message
    assert "return a float" in check_expected_gain(lambda s, d, r: "1").message


def test_gain_prediction_is_judged_against_the_measured_gains():
    config = LinearStack(width=64, depth=50, scale=1.5)
    plain, residual = (jacobian_gains(config.build(r)).rms[-1] for r in (False, True))
    assert residual > 10 * plain  # the measurement the check makes, done here independently
    right = check_gain_prediction("residual")
    assert right.passed and f"{residual:.1e}" in right.message
    assert "it is 'residual'" in check_gain_prediction("plain").message
    assert not check_gain_prediction("about the same").passed
    assert "first" in check_gain_prediction(...).message
    small = check_gain_prediction("plain", scale=0.2)  # small branches: plain collapses
    assert not small.passed and "it is 'residual'" in small.message


def _block_gradient(block, x, g):
    x = x.detach().requires_grad_(True)
    (through_f,) = torch.autograd.grad(block.residual_branch(x), x, grad_outputs=g)
    return g + through_f


def test_block_gradient_accepts_g_plus_the_branch_vjp():
    fb = check_block_gradient(_block_gradient)
    assert fb.passed, fb


def test_block_gradient_names_each_slip():
    def through_f_only(block, x, g):
        return _block_gradient(block, x, g) - g

    def ones(block, x, g):
        x = x.detach().requires_grad_(True)
        (v,) = torch.autograd.grad(block.residual_branch(x).sum(), x)
        return g + v

    def ones_only(block, x, g):
        return ones(block, x, g) - g

    def whole_block(block, x, g):
        x = x.detach().requires_grad_(True)
        (v,) = torch.autograd.grad(block(x), x, grad_outputs=g)
        return v

    assert "shortcut adds g itself" in check_block_gradient(through_f_only).message
    assert "only the shortcut's term" in check_block_gradient(lambda b, x, g: g).message
    assert "grad_outputs=g" in check_block_gradient(ones).message
    assert "left out" in check_block_gradient(ones_only).message
    assert "not block(x)" in check_block_gradient(whole_block).message
    assert "shaped like x" in check_block_gradient(lambda b, x, g: g[0]).message
    assert "max |yours - autograd|" in check_block_gradient(lambda b, x, g: 2 * g).message

    def stub(block, x, g):
        ...  # your code here

    assert "not attempted" in check_block_gradient(stub).message
    assert "not attempted" in check_block_gradient(_not_attempted).message


def test_the_new_checks_leave_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_shortcut_parameters(173_824)
    check_block_gradient(_block_gradient)
    check_gain_prediction("residual")
    torch.testing.assert_close(torch.rand(3), expected)


def test_make_identity_explains_a_replaced_layer_and_a_float32_weight():
    def replaced(block):
        block.conv2 = nn.Identity()

    def float32(block):
        block.conv2.weight = nn.Parameter(torch.zeros(block.conv2.weight.shape))

    def new_zero_conv(block):
        block.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False).double()
        nn.init.zeros_(block.conv2.weight)

    feedback = check_make_identity(replaced)
    assert not feedback.passed and "replaced block.conv2 by a new module (Identity)" in \
        feedback.message
    feedback = check_make_identity(float32)
    assert not feedback.passed and "torch.float32" in feedback.message
    assert "float64" in feedback.message and "zeros_like" in feedback.message
    assert check_make_identity(new_zero_conv).passed  # a working replacement is accepted


def test_expected_gain_names_the_missing_square_root():
    def squared(scale, depth, residual):
        return (1 + scale**2) ** depth if residual else scale ** (2 * depth)

    def residual_squared(scale, depth, residual):
        return (1 + scale**2) ** depth if residual else scale**depth

    for answer, kind in ((squared, "plain"), (residual_squared, "residual")):
        feedback = check_expected_gain(answer)
        assert not feedback.passed and f"the {kind} stack" in feedback.message
        assert "square root" in feedback.message


def test_make_identity_names_the_usual_slips_in_words():
    def in_place_under_autograd(block):
        block.conv2.weight.zero_()  # a leaf that requires grad: PyTorch refuses

    def zero_first_conv(block):
        torch.nn.init.zeros_(block.conv1.weight)

    def returns_a_new_module(block):
        return torch.nn.Identity()

    cases = {in_place_under_autograd: "torch.no_grad()",
             zero_first_conv: "conv1 now outputs 0",
             returns_a_new_module: "change one of its layers in place"}
    for answer, hint in cases.items():
        feedback = check_make_identity(answer)
        assert not feedback.passed and hint in feedback.message, feedback
        assert "raised" not in feedback.message and "conv2" not in feedback.message


def test_block_gradient_names_autograd_slips_in_words():
    def no_requires_grad(block, x, g):
        (t,) = torch.autograd.grad(block.residual_branch(x), x, grad_outputs=g)
        return g + t

    def no_grad_outputs(block, x, g):
        x = x.detach().requires_grad_(True)
        (t,) = torch.autograd.grad(block.residual_branch(x), x)
        return g + t

    def tuple_not_unpacked(block, x, g):
        x = x.detach().requires_grad_(True)
        return g + torch.autograd.grad(block.residual_branch(x), x, grad_outputs=g)

    def returns_the_tuple(block, x, g):
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(block.residual_branch(x) + x, x, grad_outputs=g)

    def no_return(block, x, g):
        x = x.detach().requires_grad_(True)
        (t,) = torch.autograd.grad(block.residual_branch(x), x, grad_outputs=g)
        g + t

    cases = {no_requires_grad: "requires a gradient", no_grad_outputs: "grad_outputs",
             tuple_not_unpacked: "returns a tuple", returns_the_tuple: "you return a tuple",
             no_return: "`return` missing"}
    for answer, hint in cases.items():
        feedback = check_block_gradient(answer)
        assert not feedback.passed and hint in feedback.message, feedback
        assert "raised" not in feedback.message and "RuntimeError" not in feedback.message


def test_shortcut_parameters_names_buffers_and_biases_and_takes_any_integer():
    import numpy as np

    right = check_shortcut_parameters(173_824)
    assert right
    assert check_shortcut_parameters(np.int64(173_824))
    assert check_shortcut_parameters(torch.tensor(173_824))
    with_buffers = check_shortcut_parameters(173_824 + 2 * (128 + 256 + 512))
    assert not with_buffers and "buffers" in with_buffers.message
    with_bias = check_shortcut_parameters(173_824 + 128 + 256 + 512)
    assert not with_bias and "no bias" in with_bias.message


def test_predict_gradient_hints_do_not_give_the_recursion():
    only_g = check_predict_gradient(lambda weights, g: g)
    assert not only_g and "only the term that skips every block" in only_g.message
    first_order = check_predict_gradient(lambda weights, g: g + sum(w.T @ g for w in weights))
    assert not first_order and "multiply" in first_order.message
    other = check_predict_gradient(lambda weights, g: 2 * g)
    assert not other and "W_i^T g_{i+1}" not in other.message
