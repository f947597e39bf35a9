"""Checks for notebook 07 (the loss landscape with and without shortcuts).

    check_filter_normalize(my_filter_normalize)   # Li et al.'s filter normalization
    check_line(my_line)                           # the loss along theta + alpha * d
    check_curvature_prediction(choice)            # plain or residual: which curves down more
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ..data import ImageSet, load_sample
from ..landscape import filter_normalize, line
from ..models import cifar_resnet
from .exercise import (
    NotYet,
    exercise,
    judge_choice,
    nontrivial_batchnorms,
    one_thread,
    returned_none,
)


def _net_and_direction(seed: int = 0) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A small residual net with non-trivial BatchNorms, and a Gaussian direction for it."""
    torch.manual_seed(seed)
    net = cifar_resnet(depth=8)
    nontrivial_batchnorms(net, spread=0.3)
    net.eval()
    direction = [torch.randn_like(p) for p in net.parameters()]
    return net, direction


@exercise
def check_filter_normalize(fn: Callable[[list[torch.Tensor], list[torch.Tensor]],
                                        list[torch.Tensor]]) -> str:
    """`fn(direction, weights)` must return `filter_normalize(direction, weights)`: each filter
    (output channel, or row of a linear layer) scaled to the norm of the same filter of the
    weights; 1-D tensors (BatchNorm's gamma and beta, biases) zero."""
    net, direction = _net_and_direction()
    weights = [p.detach() for p in net.parameters()]
    given = [d.clone() for d in direction]
    answer = fn(given, weights)
    if answer is None:
        raise returned_none(fn)
    if not all(torch.equal(a, b) for a, b in zip(given, direction, strict=True)):
        raise NotYet("your function changed the direction it was given (an in-place `*=` or "
                     "`div_`?): return new tensors and leave the input as it was")
    answer = list(answer)
    expected = filter_normalize(direction, weights)
    if len(answer) != len(expected):
        raise NotYet(f"return one tensor per parameter: {len(expected)}, got {len(answer)}")
    names = [n for n, _ in net.named_parameters()]
    for name, a, e, w in zip(names, answer, expected, weights, strict=True):
        a = torch.as_tensor(a)
        if a.shape != e.shape:
            raise NotYet(f"{name}: expected shape {tuple(e.shape)}, got {tuple(a.shape)}")
        if w.ndim <= 1:
            if torch.count_nonzero(a):
                raise NotYet(f"{name} is 1-D (a BatchNorm scale or shift, or a bias): Li et "
                             "al. set the direction of these to zero, so that moving along "
                             "it leaves them alone")
            continue
        if torch.allclose(a, e, rtol=1e-4, atol=1e-6):
            continue
        whole = direction[names.index(name)] * w.norm() / direction[names.index(name)].norm()
        if torch.allclose(a, whole, rtol=1e-4, atol=1e-6):
            raise NotYet(f"{name}: you scaled the whole tensor to the weight's norm; scale each "
                         "filter (one output channel: `flatten(1).norm(dim=1)`) to the norm "
                         "of the same filter of the weights")
        unit = a.flatten(1).norm(dim=1)
        if torch.allclose(unit, torch.ones_like(unit), rtol=1e-3):
            raise NotYet(f"{name}: each filter has norm 1; it should have the norm of the same "
                         "filter of the weights (multiply by `w.flatten(1).norm(dim=1)`)")
        raise NotYet(f"{name}: the filter norms of your direction are "
                     f"{unit[:3].tolist()}..., those of the weights "
                     f"{w.flatten(1).norm(dim=1)[:3].tolist()}...: they should match, with "
                     "each filter pointing where the Gaussian direction's filter points")
    return ("every filter of the direction has its weight's norm, and BatchNorm and biases "
            "stay fixed: steps along it are comparable between layers and between nets.")


@exercise
def check_line(fn: Callable[..., list[float]]) -> str:
    """`fn(model, direction, alphas, images)` must return the mean cross-entropy on `images` at
    theta + alpha * direction for each alpha (BatchNorm in eval mode), and put the weights
    back."""
    with one_thread():
        net, direction = _net_and_direction(seed=1)
        direction = filter_normalize(direction, [p.detach() for p in net.parameters()])
        images: ImageSet = load_sample().train.subset(slice(0, 32))
        alphas = [-0.5, 0.0, 0.5]
        before = {k: v.clone() for k, v in net.state_dict().items()}
        answer = fn(net, direction, alphas, images)
        if answer is None:
            raise returned_none(fn)
        after = net.state_dict()
        moved = [k for k in before if not torch.equal(before[k], after[k])]
        params = {n for n, _ in net.named_parameters()}
        if moved and not params & set(moved):
            raise NotYet(f"BatchNorm's running statistics changed ({moved[0]}): a forward "
                         "pass in train mode updates them. Evaluate in eval mode (`evaluate` "
                         "does), so that every point is the same function of the weights")
        if moved:
            raise NotYet(f"after your function the weights are not back where they were "
                         f"({moved[0]} changed): undo each step, or use "
                         "`with moved(model, [(alpha, direction)]):`, which puts them back")
        got = [float(x) for x in answer]
        expected = line(net, direction, alphas, images)["loss"].tolist()
    if len(got) != len(alphas):
        raise NotYet(f"return one loss per alpha: {len(alphas)}, got {len(got)}")
    if abs(got[1] - expected[1]) > 1e-4 * expected[1]:
        raise NotYet(f"at alpha = 0 (the weights themselves) the loss is {expected[1]:.4f}, "
                     f"you have {got[1]:.4f}: evaluate in eval mode (`evaluate` does), on all "
                     "the images")
    if any(abs(g - e) > 1e-4 * e for g, e in zip(got, expected, strict=True)):
        if abs(got[0] - expected[2]) < 1e-4 * expected[2]:
            raise NotYet("your losses at -alpha and +alpha are swapped: the step is "
                         "theta + alpha * d")
        raise NotYet(f"the losses should be {[round(e, 4) for e in expected]}, you have "
                     f"{[round(g, 4) for g in got]}: add alpha * d to every parameter before "
                     "evaluating")
    return f"the loss along the line is {[round(e, 3) for e in expected]}, and the weights " \
           "are back where they were."


CURVATURE_CHOICES = ("plain", "residual", "about the same")
PAIRS = (("plain56", "resnet56"), ("plain20", "resnet20"))  # the deepest measured pair decides


@exercise
def check_curvature_prediction(choice: object, measured: Mapping[str, float] | None = None
                               ) -> str:
    """Which net of the deepest plain/residual pair measured (56 layers, else 20) has the
    larger |lam_min / lam_max| at its trained weights: a factor of 2 or more decides, closer
    than that is 'about the same'. `measured`: the ratio per net name ("plain56", ...);
    without it, the stored results of `bench/landscapes.py` (`landscapes.json`)."""
    what = "the net with more negative curvature at its trained weights"
    if choice is Ellipsis:
        raise NotYet(f"choose {what} first: one of "
                     f"{', '.join(map(repr, CURVATURE_CHOICES))}")
    if measured is None:
        from ..locations import load_results

        measured = {name: r["hessian"]["ratio"]
                    for name, r in load_results("landscapes.json")["nets"].items()}
    pair = next((p for p in PAIRS if set(p) <= set(measured)), None)
    if pair is None:
        raise NotYet(f"the results hold no Hessian ratios of a plain/residual pair (they have "
                     f"{sorted(measured)}), so there is nothing to check your choice against")
    plain, residual = (measured[name] for name in pair)
    if plain >= 2 * residual:
        right = "plain"
    elif residual >= 2 * plain:
        right = "residual"
    else:
        right = "about the same"
    depth = pair[0].removeprefix("plain")
    return judge_choice(choice, right, CURVATURE_CHOICES, what=f"{what} at {depth} layers",
                        why=f"(|lam_min / lam_max|: plain-{depth} {plain:.3g}, ResNet-{depth} "
                            f"{residual:.3g}. Li et al. find the plain net's far larger at 56 "
                            "layers, and the two alike at 20.)")
