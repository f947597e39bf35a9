"""Notebook 06's exercise checks: right answers pass, the usual wrong ones get their hint."""

import time

import pytest
import torch

from resnet_edu.course.nb06_why_residual import (
    check_lag1,
    check_lesion_prediction,
    check_path_length_prediction,
    check_routed_forward,
    check_shattering_prediction,
)
from resnet_edu.ensembles import (
    routed_forward,
)


def test_check_lag1():
    def right(g):
        d = g.double() - g.double().mean()
        return float((d[:-1] * d[1:]).sum() / (d * d).sum())

    def no_mean(g):
        return float((g[:-1] * g[1:]).sum() / (g * g).sum())

    assert check_lag1(right).passed
    wrong = check_lag1(no_mean)
    assert not wrong.passed and "offset itself looks like correlation" in wrong.message
    assert "not attempted" in check_lag1(lambda g: ...).message


def test_check_routed_forward():
    def right(block, x, route):
        f, s = block.residual_branch(x), block.shortcut(x)
        if route == "branch":
            s = s.detach()
        elif route == "skip":
            f = f.detach()
        return block.relu(f + s)

    def swapped(block, x, route):
        return right(block, x, {"branch": "skip", "skip": "branch"}[route])

    def no_relu(block, x, route):
        return block.residual_branch(x) + block.shortcut(x)

    assert check_routed_forward(right).passed
    assert "gradient" in check_routed_forward(swapped).message
    assert "output differs" in check_routed_forward(no_relu).message
    assert "not attempted" in check_routed_forward(lambda b, x, r: ...).message


def test_predictions_are_judged_against_the_measurement_they_are_given():
    assert check_shattering_prediction("near 0", measured=-0.04).passed
    assert "it is 'near 1'" in check_shattering_prediction("near 0", measured=0.93).message
    assert "first" in check_shattering_prediction(...).message
    assert "one of" in check_shattering_prediction("zero", measured=0.0).message
    chance = [0.1, 0.11, 0.09]
    assert check_lesion_prediction(10, measured=chance).passed
    assert "too high" in check_lesion_prediction(45, measured=chance).message
    assert "too low" in check_lesion_prediction(45, measured=[0.8, 0.9]).message
    assert "first" in check_lesion_prediction(...).message


def test_check_lag1_names_the_pearson_correlation_of_the_halves():
    def pearson(g):
        return float(torch.corrcoef(torch.stack([g[:-1], g[1:]]))[0, 1])

    feedback = check_lag1(pearson)
    assert not feedback.passed and "Pearson correlation of the two shifted halves" in \
        feedback.message


def test_check_routed_forward_explains_no_grad_on_the_identity_and_refuses_the_library():
    def no_grad_instead_of_detach(block, x, route):
        if route == "branch":
            f = block.residual_branch(x)
            with torch.no_grad():
                s = block.shortcut(x)
        else:
            s = block.shortcut(x)
            with torch.no_grad():
                f = block.residual_branch(x)
        return block.relu(f + s)

    feedback = check_routed_forward(no_grad_instead_of_detach)
    assert not feedback.passed and "returns x itself" in feedback.message
    assert "torch.no_grad()" in feedback.message
    assert "same values cut from the graph?" in feedback.message  # the slip, not the answer
    feedback = check_routed_forward(routed_forward)
    assert not feedback.passed and "library's own routed_forward" in feedback.message


def test_check_lesion_prediction_names_a_fraction_given_for_a_percentage():
    feedback = check_lesion_prediction(0.1, measured=[0.1, 0.11, 0.09])
    assert not feedback.passed and "in percent" in feedback.message and "10 %" in \
        feedback.message
    assert check_lesion_prediction(10, measured=[0.1, 0.11, 0.09]).passed


def test_check_shattering_prediction_measures_cheaply_without_a_value():
    start = time.perf_counter()
    assert check_shattering_prediction("near 0").passed
    assert time.perf_counter() - start < 10


LAG1_SLIPS = {  # a typical wrong decision about the centre or the denominator: its hint
    "no mean taken out": (lambda g: float((g[:-1] * g[1:]).sum() / (g * g).sum()),
                          "(rule 1)"),
    "no denominator": (lambda g: float(((g - g.mean())[:-1] * (g - g.mean())[1:]).sum()),
                       "multiplying g by 10 changes your value"),
    "means over different counts": (
        lambda g: float(((g - g.mean())[:-1] * (g - g.mean())[1:]).mean()
                        / (g - g.mean()).pow(2).mean()),
        "off by the factor 256/255"),
    "Pearson of the halves": (
        lambda g: float(torch.corrcoef(torch.stack([g[:-1], g[1:]]))[0, 1]), "(rule 3)"),
    "a list instead of a number": (lambda g: [0.5], "one number"),
}


@pytest.mark.parametrize("name", LAG1_SLIPS)
def test_each_wrong_lag1_decision_gets_the_rule_it_breaks(name):
    answer, hint = LAG1_SLIPS[name]
    feedback = check_lag1(answer)
    assert not feedback.passed and hint in feedback.message, feedback.message
    assert "sum_i" not in feedback.message  # no formula handed out


def test_other_right_lag1_answers_pass():
    def with_var(g):  # unbiased variance times (N - 1): the same sum of squares
        d = g.double() - g.double().mean()
        return float((d[:-1] * d[1:]).sum() / (g.double().var() * (g.numel() - 1)))

    assert check_lag1(with_var).passed

    def as_tensor(g):  # a 0-d tensor is a number
        d = g - g.mean()
        return (d[:-1] * d[1:]).sum() / (d * d).sum()

    assert check_lag1(as_tensor).passed


def _right_route(block, x, route):
    f, s = block.residual_branch(x), block.shortcut(x)
    if route == "branch":
        s = s.detach()
    elif route == "skip":
        f = f.detach()
    return block.relu(f + s)


def _skip_under_no_grad(block, x, route):  # torch.no_grad() on the branch works for 'skip'
    if route == "skip":
        with torch.no_grad():
            f = block.residual_branch(x)
        return block.relu(f + block.shortcut(x))
    return _right_route(block, x, route)


ROUTE_SLIPS = {  # a typical wrong decision about what to cut and where: its hint
    "the terms swapped": (
        lambda b, x, r: _right_route(b, x, {"branch": "skip", "skip": "branch"}[r]),
        "it matches route 'skip'"),
    "a term zeroed, not cut": (
        lambda b, x, r: b.relu(b.residual_branch(x) * (r != "skip")
                               + b.shortcut(x) * (r != "branch")),
        "which is a lesion"),
    "the output detached": (lambda b, x, r: _right_route(b, x, "both").detach(),
                            "carries no gradient at all"),
    "block(x) whatever the route": (lambda b, x, r: b(x), "flows through both terms"),
    "the ReLU forgotten": (lambda b, x, r: b.residual_branch(x) + b.shortcut(x),
                           "the sum before the block's last ReLU"),
    "a list returned": (lambda b, x, r: [b(x)], "as a tensor"),
}


@pytest.mark.parametrize("name", ROUTE_SLIPS)
def test_each_wrong_routing_decision_gets_what_the_check_measured(name):
    answer, hint = ROUTE_SLIPS[name]
    feedback = check_routed_forward(answer)
    assert not feedback.passed and hint in feedback.message, feedback.message
    assert ".detach()" not in feedback.message  # the hint names the slip, not the answer


def test_no_grad_around_the_branch_is_a_right_answer_for_skip():
    assert check_routed_forward(_skip_under_no_grad).passed


def test_wrappers_around_the_package_s_answers_are_refused():
    """Issue 28, point 7: a thin wrapper around the library's own answer is refused, however
    it was imported or named."""
    from resnet_edu.ensembles import routed_forward as rf
    from resnet_edu.shattered import autocorrelation as ac

    fb = check_lag1(lambda g: float(ac(g, 1)[1]))
    assert not fb.passed and "calls autocorrelation" in fb.message
    fb = check_routed_forward(lambda block, x, route: rf(block, x, route))
    assert not fb.passed and "calls routed_forward" in fb.message


def test_check_path_length_prediction_uses_the_binomial_mean():
    r = 0.8  # the mean of C(27, k) r^k / (1 + r)^27 is 27 r / (1 + r) = 12
    assert check_path_length_prediction(12, r).passed
    assert check_path_length_prediction(11, r).passed  # within 10 %
    assert "too high" in check_path_length_prediction(13.5, r=0.5).message  # 9
    assert "too low" in check_path_length_prediction(5, r=0.3, n=54).message  # 12.5
    shown = check_path_length_prediction(12, r, measured=13.2).message
    assert "same fraction r/(1+r) = 0.44" in shown and "Measured in ResNet-56: 13.2" in shown
    assert "first" in check_path_length_prediction(..., r).message
    assert "positive attenuation" in check_path_length_prediction(12, r=0).message
