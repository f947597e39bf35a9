"""Notebook 07's exercise checks: the right answers pass, the usual wrong ones get their hint."""

import torch

from resnet_edu.evaluation import evaluate
from resnet_edu.exercises.landscapes import (
    check_curvature_prediction,
    check_filter_normalize,
    check_line,
)
from resnet_edu.landscape import moved


def right_normalize(direction, weights):
    out = []
    for d, w in zip(direction, weights, strict=True):
        if w.ndim <= 1:
            out.append(torch.zeros_like(w))
            continue
        shape = (-1,) + (1,) * (w.ndim - 1)
        out.append(d / d.flatten(1).norm(dim=1).view(shape) * w.flatten(1).norm(dim=1).view(shape))
    return out


def test_filter_normalize_passes_the_right_answer_and_names_each_mistake():
    assert check_filter_normalize(right_normalize)

    def whole_tensor(direction, weights):
        return [torch.zeros_like(w) if w.ndim <= 1 else d * w.norm() / d.norm()
                for d, w in zip(direction, weights, strict=True)]

    def unit_filters(direction, weights):
        return [torch.zeros_like(w) if w.ndim <= 1 else
                d / d.flatten(1).norm(dim=1).view((-1,) + (1,) * (w.ndim - 1))
                for d, w in zip(direction, weights, strict=True)]

    def keeps_batchnorm(direction, weights):
        out = right_normalize(direction, weights)
        return [d if w.ndim <= 1 else o for d, w, o in zip(direction, weights, out, strict=True)]

    def in_place(direction, weights):
        for d, w in zip(direction, weights, strict=True):
            d.mul_(0 if w.ndim <= 1 else 1)
        return right_normalize(direction, weights)

    def stub(direction, weights):
        ...

    def forgets_return(direction, weights):
        right_normalize(direction, weights)

    for fn, hint in ((whole_tensor, "whole tensor"), (unit_filters, "norm 1"),
                     (keeps_batchnorm, "set the direction of these to zero"),
                     (in_place, "changed the direction it was given"),
                     (stub, "not attempted yet"), (forgets_return, "`return` missing")):
        feedback = check_filter_normalize(fn)
        assert not feedback and hint in feedback.message, (fn.__name__, feedback.message)


def test_line_passes_the_right_answer_and_names_each_mistake():
    def right(model, direction, alphas, images):
        out = []
        for a in alphas:
            with moved(model, [(float(a), direction)]):
                out.append(evaluate(model, images)["loss"])
        return out

    assert check_line(right)

    def never_moves_back(model, direction, alphas, images):
        out = []
        for a in alphas:
            with torch.no_grad():
                for p, d in zip(model.parameters(), direction, strict=True):
                    p.add_(a * d)
            out.append(evaluate(model, images)["loss"])
        return out

    def train_mode(model, direction, alphas, images):
        from resnet_edu.data import normalize

        out = []
        for a in alphas:
            with moved(model, [(float(a), direction)]), torch.no_grad():
                model.train()
                logits = model(normalize(images.images))
                model.eval()
                out.append(torch.nn.functional.cross_entropy(logits, images.labels).item())
        return out

    def swapped(model, direction, alphas, images):
        return right(model, direction, [-a for a in alphas], images)

    def never_moves(model, direction, alphas, images):
        return [evaluate(model, images)["loss"] for _ in alphas]

    for fn, hint in ((never_moves_back, "not back where they were"),
                     (train_mode, "train mode updates them"), (swapped, "swapped"),
                     (never_moves, "add alpha * d")):
        feedback = check_line(fn)
        assert not feedback and hint in feedback.message, (fn.__name__, feedback.message)


def test_the_curvature_prediction_is_judged_on_the_measured_ratios():
    measured = {"plain56": 0.4, "resnet56": 0.01, "plain20": 0.02, "resnet20": 0.01}
    assert check_curvature_prediction("plain-56", measured=measured)
    wrong = check_curvature_prediction("ResNet-56", measured=measured)
    assert not wrong and "'plain-56'" in wrong.message and "0.4" in wrong.message
    same = {"plain56": 0.03, "resnet56": 0.02}
    assert check_curvature_prediction("about the same", measured=same)
    assert "choose" in check_curvature_prediction(..., measured=measured).message
    missing = check_curvature_prediction("plain-56", measured={"plain20": 0.1})
    assert not missing and "no Hessian ratios for both 56-layer nets" in missing.message
    assert not check_curvature_prediction("plain", measured=measured)  # not one of the options
