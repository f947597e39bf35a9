"""The notebook 02 checks: right answers pass, typical wrong ones get their specific hint."""

import math

import pytest
import torch
from torch import nn

from resnet_edu.course.exercise import Feedback
from resnet_edu.course.nb02_gradient_flow import (
    DEFAULT_INIT_N_VAR,
    check_drift_prediction,
    check_experiment_design,
    check_grad_norm_loop,
    check_shortcut_forward,
    check_weight_spread,
)
from resnet_edu.gradients import gradient_norms
from resnet_edu.shortcuts import ZeroPadShortcut

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny convs

LAYERS = (nn.Conv2d, nn.Linear)


def _loop(model, images, labels, *, zero=True, value=lambda g: g.norm().item(),
          keep=lambda m: isinstance(m, LAYERS), loss=nn.functional.cross_entropy):
    if zero:
        model.zero_grad()
    loss(model(images), labels).backward()
    return {name: value(m.weight.grad) for name, m in model.named_modules() if keep(m)}


def test_grad_norm_loop_accepts_the_loop_and_parameter_names():
    assert check_grad_norm_loop(_loop)

    def by_parameters(model, images, labels):
        model.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        return {n: p.grad.norm() for n, p in model.named_parameters()
                if n.endswith("weight") and p.dim() > 1}  # "conv1.weight", tensors

    assert check_grad_norm_loop(by_parameters)

    def by_autograd(model, images, labels):  # no .grad written: right all the same
        layers = {n: m for n, m in model.named_modules() if isinstance(m, LAYERS)}
        loss = nn.functional.cross_entropy(model(images), labels)
        grads = torch.autograd.grad(loss, [m.weight for m in layers.values()])
        return {n: g.norm().item() for n, g in zip(layers, grads, strict=True)}

    def cleaned_up(model, images, labels):  # .grad set to None at the end
        norms = _loop(model, images, labels)
        model.zero_grad(set_to_none=True)
        return norms

    assert check_grad_norm_loop(by_autograd)
    assert check_grad_norm_loop(  # the library's numbers are right numbers
        lambda model, images, labels: {r.layer: r.norm
                                       for r in gradient_norms(model, images, labels)})
    assert check_grad_norm_loop(cleaned_up)


def test_grad_norm_loop_explains_what_is_wrong():
    def no_backward(model, images, labels):  # wrong numbers and no .grad
        nn.functional.cross_entropy(model(images), labels)
        return {n: 1.0 for n, m in model.named_modules() if isinstance(m, LAYERS)}

    def eval_mode(model, images, labels):
        model.eval()
        return _loop(model, images, labels)

    cases = {
        "ADDS to .grad": lambda m, x, y: _loop(m, x, y, zero=False),
        "norms of the weights": lambda m, x, y: _loop(m, x, y, value=lambda g: 0.0) and {
            n: k.weight.norm().item() for n, k in m.named_modules() if isinstance(k, LAYERS)},
        "square root": lambda m, x, y: _loop(m, x, y, value=lambda g: (g ** 2).sum().item()),
        "times too large": lambda m, x, y: _loop(
            m, x, y, loss=lambda o, t: nn.functional.cross_entropy(o, t, reduction="sum")),
        "classifier `fc`": lambda m, x, y: _loop(m, x, y, keep=lambda k: isinstance(k, nn.Conv2d)),
        "BatchNorm2d": lambda m, x, y: _loop(
            m, x, y, keep=lambda k: isinstance(k, (*LAYERS, nn.BatchNorm2d))),
        "are missing": lambda m, x, y: _loop(
            m, x, y, keep=lambda k: isinstance(k, LAYERS) and k is not m.conv1),
        "shape": lambda m, x, y: _loop(m, x, y, value=lambda g: g),
        "no .grad was written": no_backward,
        "eval mode": eval_mode,
        "return a dict": lambda m, x, y: [1.0],
        "not attempted": lambda m, x, y: ...,
    }
    for hint, fn in cases.items():
        feedback = check_grad_norm_loop(fn)
        assert isinstance(feedback, Feedback) and not feedback, hint
        assert hint in feedback.message, (hint, feedback.message)


def test_grad_norm_loop_names_errors_in_the_loop():
    """An error in the student's loop gets a hint in the notebook's words, never the raw
    PyTorch error (issue 28, point 7)."""

    def zero_after_backward(model, images, labels, set_to_none=True):  # the slip
        nn.functional.cross_entropy(model(images), labels).backward()
        model.zero_grad(set_to_none=set_to_none)
        return {n: m.weight.grad.norm().item() for n, m in model.named_modules()
                if isinstance(m, LAYERS)}

    def no_backward(model, images, labels):  # reads .grad before anything wrote it
        model.zero_grad()
        nn.functional.cross_entropy(model(images), labels)
        return {n: m.weight.grad.norm().item() for n, m in model.named_modules()
                if isinstance(m, LAYERS)}

    def under_no_grad(model, images, labels):
        with torch.no_grad():
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()

    def every_module(model, images, labels):
        _loop(model, images, labels, keep=lambda m: True)

    def loss_module(model, images, labels):
        nn.CrossEntropyLoss(model(images), labels).backward()

    def twice(model, images, labels):
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        loss.backward()

    cases = {
        "clears the gradients after backward()": zero_after_backward,
        "every .grad is all zeros": lambda m, x, y: zero_after_backward(m, x, y, False),
        "no gradient has been computed yet": no_backward,
        "not inside torch.no_grad()": under_no_grad,
        "has none: keep only the modules": every_module,
        "not on the model's output": lambda m, x, y: m(x).sum(0).backward(),
        "a loss per image": lambda m, x, y: _loop(
            m, x, y, loss=lambda o, t: nn.functional.cross_entropy(o, t, reduction="none")),
        "on a Python number": lambda m, x, y: _loop(
            m, x, y, loss=lambda o, t: nn.functional.cross_entropy(o, t).item()),
        "the logits) first": lambda m, x, y: _loop(
            m, x, y, loss=lambda o, t: nn.functional.cross_entropy(t, o)),
        "nn.CrossEntropyLoss is a class": loss_module,
        "backward() ran twice": twice,
        "Go through the steps again": lambda m, x, y: 1 / 0,
    }
    for hint, fn in cases.items():
        feedback = check_grad_norm_loop(fn)
        assert isinstance(feedback, Feedback) and not feedback, hint
        assert hint in feedback.message, (hint, feedback.message)
        assert "running your answer raised" not in feedback.message, feedback.message
        assert "NoneType" not in feedback.message, feedback.message


def test_drift_prediction():
    theory = 0.5 * math.log10(DEFAULT_INIT_N_VAR / 2)
    right = check_drift_prediction(round(theory, 2))
    assert right and "decades" in right.message, right
    assert "wrong sign" in check_drift_prediction(-round(theory, 2)).message
    assert "too low" in check_drift_prediction(-1.0).message
    assert "too high" in check_drift_prediction(-0.05).message
    assert "first" in check_drift_prediction(...).message


def test_drift_prediction_names_the_slip():
    factor = DEFAULT_INIT_N_VAR / 2  # 1/6
    slips = {
        math.sqrt(factor): "not yet in decades",
        factor: "square root",
        math.log10(factor): "half as many decades",
        0.5 * math.log10(DEFAULT_INIT_N_VAR): "left out the ReLU",
        math.log10(DEFAULT_INIT_N_VAR): "both the ReLU",
        0.5 * math.log(factor): "natural logarithm",
        math.log(factor): "natural logarithm",
        0.5 * math.log10(3 * factor): "b²/3",
    }
    for guess, hint in slips.items():
        feedback = check_drift_prediction(round(guess, 3))
        assert not feedback and hint in feedback.message, (guess, feedback.message)


def _option_a(block, x):
    out = block.residual_branch(x)
    if out.shape != x.shape:
        x = ZeroPadShortcut(block.inplanes, block.out_channels, block.stride)(x)
    return block.relu(out + x)


def _symmetric(block, x):  # akamaster's and kuangliu's option A: planes//4 zeros on each side
    out = block.residual_branch(x)
    if out.shape != x.shape:
        planes = block.out_channels
        x = nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4),
                              "constant", 0)
    return block.relu(out + x)


def _zeros_first(block, x):
    out = block.residual_branch(x)
    if out.shape != x.shape:
        x = x[:, :, ::block.stride, ::block.stride]
        x = torch.cat([torch.zeros_like(x), x], dim=1)
    return block.relu(out + x)


def test_shortcut_forward_accepts_every_option_a():
    right = check_shortcut_forward(_option_a)
    assert right and "ResNet-56" in right.message and "sit" not in right.message, right.message
    for fn, where in ((_symmetric, "on both sides"), (_zeros_first, "before x's channels")):
        feedback = check_shortcut_forward(fn)
        assert feedback and where in feedback.message, feedback.message
        assert "both are option A" in feedback.message


def test_shortcut_forward_leaves_the_random_state_alone():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    check_shortcut_forward(_option_a)
    assert torch.equal(torch.rand(3), want)


def test_shortcut_forward():
    def no_reshape(block, x):  # the first try: add, then ReLU, everywhere
        return block.relu(block.residual_branch(x) + x)

    def projection(block, x):  # option B: a new 1x1 conv where the shape changes
        out = block.residual_branch(x)
        if out.shape != x.shape:
            x = nn.Conv2d(block.inplanes, block.out_channels, 1, block.stride, bias=False)(x)
        return block.relu(out + x)

    def after_relu(block, x):
        out = block.residual_branch(x)
        if out.shape != x.shape:
            x = ZeroPadShortcut(block.inplanes, block.out_channels, block.stride)(x)
        return block.relu(out) + x

    def only_where_shapes_match(block, x):  # no shortcut at all in the transitions
        out = block.residual_branch(x)
        return block.relu(out + x if out.shape == x.shape else out)

    def no_subsampling(block, x):  # zero channels, but H and W kept
        out = block.residual_branch(x)
        if out.shape != x.shape:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, block.out_channels - block.inplanes))
        return block.relu(out + x)

    def repeated_channels(block, x):  # the extra channels are a copy of x, not zeros
        out = block.residual_branch(x)
        if out.shape != x.shape:
            x = x[:, :, ::2, ::2]
            x = torch.cat([x, x], dim=1)
        return block.relu(out + x)

    def swapped_arguments(block, x):
        out = block.residual_branch(x)
        if out.shape != x.shape:
            x = ZeroPadShortcut(block.out_channels, block.inplanes, block.stride)(x)
        return block.relu(out + x)

    def downsample(block, x):  # the residual block's own attribute: None in a plain block
        out = block.residual_branch(x)
        if out.shape != x.shape:
            x = block.downsample(x)
        return block.relu(out + x)

    def detached(block, x):  # the whole input cut off from the graph
        return _option_a(block, x.detach())

    def detached_shortcut(block, x):  # the gradient flows through F only: a plain net's
        out = block.residual_branch(x)
        x = x.detach()
        if out.shape != x.shape:
            x = ZeroPadShortcut(block.inplanes, block.out_channels, block.stride)(x)
        return block.relu(out + x)

    def padded_everywhere(block, x):
        out = block.residual_branch(x)
        x = nn.functional.pad(x[:, :, ::block.stride, ::block.stride], (0, 0, 0, 0, 0, 16))
        return block.relu(out + x)

    cases = {
        "in layer2.0 F(x) is (B, 32, 16, 16) but x is (B, 16, 32, 32)": no_reshape,
        "projection is option B": projection,
        "AFTER the block's last ReLU": after_relu,
        "add the input x": lambda block, x: block.relu(block.residual_branch(x)),
        "your forward adds nothing": only_where_shapes_match,
        "brought to F(x)'s shape": no_subsampling,
        "fills the extra channels with zeros": repeated_channels,
        "takes x's channels first": swapped_arguments,
        "has no shortcut module": downsample,
        "the plain block has no `shortcut_module`": lambda block, x: block.shortcut_module(x),
        "shortcut changes x's shape": padded_everywhere,
        "does your shortcut .detach() x": detached_shortcut,
        "no gradient reaches the first blocks": detached,
        "not attempted": lambda block, x: ...,
    }
    for hint, fn in cases.items():
        feedback = check_shortcut_forward(fn)
        assert not feedback and hint in feedback.message, (hint, feedback.message)
        assert "running your answer raised" not in feedback.message, feedback.message
    assert "option B" not in check_shortcut_forward(after_relu).message


def test_experiment_design():
    assert check_experiment_design("b")
    wrong = check_experiment_design("a")
    assert not wrong and "generalization" in wrong.message
    assert "one gap cannot show a trend" in check_experiment_design("c").message
    assert "learning rate of 0" in check_experiment_design("d").message
    assert "first" in check_experiment_design(...).message


def _spread(table):
    norms = [row.norm for row in table.of_kind("weight")]
    return math.log10(max(norms) / min(norms))


def test_weight_spread():
    right = check_weight_spread(_spread, 0.5)
    assert right and "level" in right.message, right.message

    def every_row(table):
        norms = [row.norm for row in table.rows]
        return math.log10(max(norms) / min(norms))

    def ratio(table):
        norms = [row.norm for row in table.of_kind("weight")]
        return max(norms) / min(norms)

    cases = {
        "wrong sign": (lambda table: -_spread(table), 1.0),
        "log10": (ratio, 1.0),
        "block-output rows": (every_row, 1.0),
        "drift": (_spread, 4.0),
        "more than a decade off": (_spread, 10.0),
        "should be a number": (_spread, "level"),
        "not attempted": (_spread, ...),
    }
    for hint, (fn, guess) in cases.items():
        feedback = check_weight_spread(fn, guess)
        assert not feedback and hint in feedback.message, (hint, feedback.message)
    assert "not attempted" in check_weight_spread(lambda table: ..., 1.0).message


def test_weight_spread_names_errors_in_the_function():
    cases = {
        "table.of_kind('weight')": lambda table: _spread(table.of_kind("weights")),
        "each row's .norm": lambda table: min(table.of_kind("weight")) / 1,
    }
    for hint, fn in cases.items():
        feedback = check_weight_spread(fn, 0.5)
        assert not feedback and hint in feedback.message, (hint, feedback.message)
        assert "running your answer raised" not in feedback.message, feedback.message


def test_grad_norm_loop_names_more_slips():
    def no_return(model, images, labels):
        _loop(model, images, labels)

    def optimizer_step(model, images, labels):
        norms = _loop(model, images, labels)
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        return norms

    cases = {
        "`return` missing": no_return,
        "changed the model's weights": optimizer_step,
        "softmax": lambda m, x, y: _loop(
            m, x, y, loss=lambda out, t: nn.functional.cross_entropy(out.softmax(1), t)),
        "absolute values": lambda m, x, y: _loop(m, x, y, value=lambda g: g.abs().sum().item()),
    }
    for hint, fn in cases.items():
        feedback = check_grad_norm_loop(fn)
        assert not feedback and hint in feedback.message, (hint, feedback.message)


def test_weight_spread_and_shortcut_forward_name_a_forgotten_return_and_ln():
    def no_return(table):
        _spread(table)

    assert "`return` missing" in check_weight_spread(no_return, 0.5).message
    ln = check_weight_spread(lambda t: _spread(t) * math.log(10), 0.5)
    assert not ln and "natural logarithm" in ln.message

    def forward_no_return(block, x):
        block.relu(block.residual_branch(x) + x)

    assert "`return` missing" in check_shortcut_forward(forward_no_return).message


def test_shortcut_forward_says_which_dimension_still_differs():
    def no_subsample(block, x):
        out = block.residual_branch(x)
        if out.shape != x.shape:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, block.out_channels - block.inplanes))
        return block.relu(out + x)

    def no_zeros(block, x):
        out = block.residual_branch(x)
        if out.shape != x.shape:
            x = x[:, :, ::2, ::2]
        return block.relu(out + x)

    for fn, hint in ((no_subsample, "fails on the width (W)"),
                     (no_zeros, "fails on the channels (C)")):
        feedback = check_shortcut_forward(fn)
        assert not feedback and hint in feedback.message, feedback.message
