"""Notebook 07's exercise checks: the right answers pass, the usual wrong ones get their hint."""

import torch

from resnet_edu.course.nb07_landscapes import (
    check_curvature_prediction,
    check_filter_normalize,
    check_line,
)
from resnet_edu.evaluation import evaluate
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


def test_the_curvature_prediction_is_judged_on_the_deepest_measured_pair():
    measured = {"plain56": 0.4, "resnet56": 0.01, "plain20": 0.01, "resnet20": 0.01}
    assert check_curvature_prediction("plain", measured=measured)  # 56 layers decide
    wrong = check_curvature_prediction("about the same", measured=measured)
    assert not wrong and "'plain'" in wrong.message and "plain-56 0.4" in wrong.message
    shallow = {"plain20": 0.03, "resnet20": 0.02}  # no 56-layer pair: the 20-layer one
    assert check_curvature_prediction("about the same", measured=shallow)
    assert "at 20 layers" in check_curvature_prediction("plain", measured=shallow).message
    assert "choose" in check_curvature_prediction(..., measured=measured).message
    missing = check_curvature_prediction("plain", measured={"plain20": 0.1})
    assert not missing and "no Hessian ratios of a plain/residual pair" in missing.message
    assert not check_curvature_prediction("plain-56", measured=measured)  # not an option


def test_the_curvature_prediction_reads_the_stored_results_by_itself():
    from resnet_edu.locations import load_results

    stored = {n: r["hessian"]["ratio"] for n, r in load_results("landscapes.json")["nets"].items()}
    for choice in ("plain", "residual", "about the same"):
        assert (check_curvature_prediction(choice).passed
                == check_curvature_prediction(choice, measured=stored).passed)
