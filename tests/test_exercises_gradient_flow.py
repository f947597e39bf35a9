"""The notebook 02 checks: right answers pass, typical wrong ones get their specific hint."""

import pytest
import torch
from torch import nn

from resnet_edu.exercises import Feedback
from resnet_edu.exercises.gradient_flow import (
    DEFAULT_INIT_N_VAR,
    check_drift_prediction,
    check_experiment_design,
    check_grad_norm_loop,
)
from resnet_edu.gradients import gradient_norms

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


def test_grad_norm_loop_explains_what_is_wrong():
    def library(model, images, labels):  # right numbers, no .grad: not the exercise
        return {r.layer: r.norm for r in gradient_norms(model, images, labels)}

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
        "no .grad was written": library,
        "eval mode": eval_mode,
        "return a dict": lambda m, x, y: [1.0],
        "not attempted": lambda m, x, y: ...,
    }
    for hint, fn in cases.items():
        feedback = check_grad_norm_loop(fn)
        assert isinstance(feedback, Feedback) and not feedback, hint
        assert hint in feedback.message, (hint, feedback.message)


def test_drift_prediction():
    theory = 0.5 * torch.log10(torch.tensor(DEFAULT_INIT_N_VAR / 2)).item()
    right = check_drift_prediction(round(theory, 2))
    assert right and "decades" in right.message, right
    assert "wrong sign" in check_drift_prediction(-round(theory, 2)).message
    assert "too low" in check_drift_prediction(-1.0).message
    assert "too high" in check_drift_prediction(-0.1).message
    assert "first" in check_drift_prediction(...).message


def test_experiment_design():
    assert check_experiment_design("b")
    wrong = check_experiment_design("a")
    assert not wrong and "generalization" in wrong.message
    assert "first" in check_experiment_design(...).message
