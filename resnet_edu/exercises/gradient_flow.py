"""Checks for notebook 02 (gradient flow in plain and residual nets).

    check_grad_norm_loop(layer_grad_norms)          # write the per-layer gradient-norm loop
    check_drift_prediction(my_drift_per_conv)       # predict the drift from the init variance
    check_smallest_gradient(smallest_layer, side)   # which layer of plain-56 gets the least
    check_shortcut_forward(forward_with_shortcut)   # put the shortcut back in the right place
    check_experiment_design(my_experiment)          # slower to converge, or a worse optimum?
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..data import load_sample, normalize
from ..gradients import WEIGHT, GradientNorms, drift_decades, gradient_norms
from ..models import cifar_resnet
from . import NotYet, close, exercise, judge_choice, judge_prediction

SIDES = ("input", "output")
GradNormLoop = Callable[[nn.Module, torch.Tensor, torch.Tensor], Mapping[str, float]]


def _probe_batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n training images of the shipped sample: the same batch every time."""
    train = load_sample().train
    return normalize(train.images[:n]), train.labels[:n]


def _seeded(depth: int, residual: bool = False, **kwargs: object) -> nn.Module:
    """cifar_resnet(depth) built from seed 0, leaving the global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cifar_resnet(depth, residual=residual, **kwargs)


def _as_norms(got: object) -> dict[str, float]:
    """The student's {layer: norm}, values as floats, "conv1.weight" read as "conv1"."""
    if got is None or got is Ellipsis:
        raise NotImplementedError
    if not isinstance(got, Mapping):
        raise NotYet(f"return a dict {{layer name: norm}}, e.g. {{'conv1': 2.46, ...}}; got a "
                     f"{type(got).__name__}")
    out = {}
    for name, value in got.items():
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise NotYet(f"the value for {name!r} is a tensor of shape {tuple(value.shape)}: "
                         "store one number per layer, the norm of the gradient "
                         "(`.grad.norm().item()`)")
        try:
            out[str(name).removesuffix(".weight")] = float(value)
        except (TypeError, ValueError):
            raise NotYet(f"the value for {name!r} should be a number, got {value!r}") from None
    return out


@exercise
def check_grad_norm_loop(layer_grad_norms: GradNormLoop) -> str:
    """`layer_grad_norms(model, images, labels)` returns {layer name: ||dE/dW||_F} for every
    conv and linear layer after one forward pass and `.backward()`.

    The oracle is `gradient_norms` on the same plain-20 (seed 0) and the same batch. The
    function is called twice on one model, as a notebook would: the second call must not
    add the first call's gradients to its own.
    """
    x, y = _probe_batch()
    model = _seeded(20)
    oracle = gradient_norms(model, x, y)  # leaves the model as it was, no .grad written
    want = {r.layer: r.norm for r in oracle.of_kind(WEIGHT)}
    got = _as_norms(layer_grad_norms(model, x, y))
    convs = [n for n in want if n != "fc"]
    missing, extra = [n for n in want if n not in got], [n for n in got if n not in want]
    if extra:
        kind = _module_type(model, extra[0])
        what = f" is a {kind}," if kind else " is"
        raise NotYet(f"{extra[0]!r}{what} not a conv or linear layer's weight: keep only the "
                     "modules with isinstance(module, (nn.Conv2d, nn.Linear)), and only their "
                     "weights")
    if missing == ["fc"]:
        raise NotYet("every conv is there; add the classifier `fc` (an nn.Linear) too")
    if missing:
        raise NotYet(f"{len(missing)} of the {len(want)} conv/linear layers are missing, e.g. "
                     f"{missing[0]!r}: loop over model.named_modules()")
    if all(getattr(m, "weight", None) is None or m.weight.grad is None
           for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        raise NotYet("no .grad was written: call loss.backward() and read module.weight.grad "
                     "(the point is to write the loop, not to call gradient_norms)")
    _compare(got, want, model, convs)
    again = _as_norms(layer_grad_norms(model, x, y))
    if all(close(again[n], 2 * want[n], rel=1e-3) for n in convs):
        raise NotYet("the first call is right, but a second call on the same model returns "
                     "twice the norms: .backward() ADDS to .grad. Call model.zero_grad() "
                     "before the forward pass")
    _compare(again, want, model, convs)
    return (f"your loop matches gradient_norms on all {len(want)} layers of plain-20 (conv1: "
            f"{got['conv1']:.3g}, fc: {got['fc']:.3g}). From here on the notebook uses "
            "gradient_norms, which also catches the block outputs and leaves no .grad behind.")


def _module_type(model: nn.Module, name: str) -> str | None:
    try:
        return type(model.get_submodule(name)).__name__
    except AttributeError:
        return None


def _compare(got: dict[str, float], want: dict[str, float], model: nn.Module,
             convs: list[str]) -> None:
    """NotYet naming the first layer that differs, with the likely reason."""
    if all(close(got[n], want[n], rel=1e-3, abs_=1e-12) for n in want):
        return
    weights = {n: float(model.get_submodule(n).weight.detach().norm()) for n in want}
    if all(close(got[n], weights[n], rel=1e-3) for n in want):
        raise NotYet("these are the norms of the weights themselves; take the norm of their "
                     "gradients, module.weight.grad")
    if all(close(got[n], want[n] ** 2, rel=1e-3) for n in want):
        raise NotYet("you return the sum of squares: the Frobenius norm is its square root "
                     "(`.norm()`)")
    ratios = [got[n] / want[n] for n in convs if want[n] > 0]
    if ratios and all(close(r, ratios[0], rel=1e-3) for r in ratios) and ratios[0] > 1.5:
        raise NotYet(f"every norm is {ratios[0]:.3g} times too large: use the mean loss over "
                     "the batch, nn.functional.cross_entropy(model(images), labels)")
    if not model.training:
        raise NotYet("your function left the model in eval mode, where BatchNorm uses its "
                     "running statistics instead of the batch's: measure in train mode, as "
                     "during training")
    first = next(n for n in want if not close(got[n], want[n], rel=1e-3, abs_=1e-12))
    raise NotYet(f"{first}: you have {got[first]:.4g}, gradient_norms measures "
                 f"{want[first]:.4g}. One forward pass in train mode, the cross-entropy loss, "
                 "one .backward(), then module.weight.grad.norm()")


# PyTorch's default conv init, kaiming_uniform_(a=sqrt(5)): n Var(W) = gain^2 = 1/3
DEFAULT_INIT_N_VAR = nn.init.calculate_gain("leaky_relu", math.sqrt(5)) ** 2


def measured_drift_per_conv(depth: int = 56) -> float:
    """Block-output gradient drift of plain-`depth` without BatchNorm (default init), in
    decades per conv between the last block's output and the first's."""
    x, y = _probe_batch()
    table = gradient_norms(_seeded(depth, init="default", norm_layer=nn.Identity), x, y,
                           activations=True)
    convs = 2 * (len(table.of_kind("activation")) - 1)
    return drift_decades(table) / convs


@exercise
def check_drift_prediction(my_drift_per_conv: object) -> str:
    """The predicted change of the gradient's scale per conv + ReLU, in decades, for a plain
    net without BatchNorm under PyTorch's default init; measured on plain-56."""
    actual = measured_drift_per_conv(56)
    theory = 0.5 * math.log10(DEFAULT_INIT_N_VAR / 2)
    if (isinstance(my_drift_per_conv, (int, float)) and not isinstance(my_drift_per_conv, bool)
            and close(my_drift_per_conv, -theory, rel=0.25)):
        raise NotYet(f"right size, wrong sign: {my_drift_per_conv:+.2f} decades per conv "
                     "would make the gradient GROW toward the input. A factor n Var(W)/2 "
                     "below 1 shrinks it: the logarithm of a number below 1 is negative")
    return judge_prediction(
        my_drift_per_conv, actual, what="the drift per conv + ReLU (decades)", rel=0.25,
        why=(f"n Var(W)/2 = {DEFAULT_INIT_N_VAR / 2:.3f} per conv in the second moment, so "
             f"log10(sqrt({DEFAULT_INIT_N_VAR / 2:.3f})) = {theory:+.2f} decades in scale; "
             f"over plain-56's 52 convs that is {52 * actual:+.0f} decades."))


def _plain56_table() -> GradientNorms:
    return gradient_norms(_seeded(56), *_probe_batch())


@exercise
def check_smallest_gradient(smallest_layer: Callable[[GradientNorms], str], side: str) -> str:
    """`smallest_layer(table)` names the conv/fc layer with the smallest weight-gradient
    norm; `side` says where it sits in plain-56 with BatchNorm ('input' or 'output')."""
    table = _plain56_table()
    rows = table.of_kind(WEIGHT)
    answer = smallest_layer(table)
    if answer is None or answer is Ellipsis or side is Ellipsis:  # still `...`
        raise NotImplementedError
    if side not in SIDES:
        raise NotYet(f"side should be 'input' or 'output', got {side!r}")
    best = min(rows, key=lambda r: r.norm)
    if answer != best.layer:
        names = [r.layer for r in rows]
        if answer not in names:
            raise NotYet(f"{answer!r} is not a layer of the table; names look like "
                         f"{names[1]!r} (use row.layer of the row with the smallest row.norm)")
        row = rows[names.index(answer)]
        raise NotYet(f"{answer!r} has norm {row.norm:.2e}, but another layer has a "
                     "smaller one: compare every weight row's norm")
    truth = "output" if best.depth > len(rows) / 2 else "input"
    if side != truth:
        raise NotYet(f"right layer ({best.layer}, depth {best.depth} of {len(rows)}), but it "
                     f"sits on the {truth} side: with BatchNorm the plain net's gradient "
                     "grows on its way back to the input")
    return (f"{best.layer} (depth {best.depth} of {len(rows)}): with BatchNorm the plain net's "
            "gradient grows layer by layer on the way back, so the smallest is near the "
            "output and the input layers get the largest.")


class _Patched(nn.Module):
    """A block whose forward is the student's function of (block, x)."""

    def __init__(self, block: nn.Module, forward: Callable[[nn.Module, torch.Tensor],
                                                            torch.Tensor]) -> None:
        super().__init__()
        self.block, self.fn = block, forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(self.block, x)
        if out is None or out is Ellipsis:  # the body is still `...`
            raise NotImplementedError
        return out


def _patch(model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
           ) -> nn.Module:
    for stage in (model.layer1, model.layer2, model.layer3):
        for i, block in enumerate(stage):
            stage[i] = _Patched(block, forward)
    return model


@exercise
def check_shortcut_forward(forward_with_shortcut: Callable[[nn.Module, torch.Tensor],
                                                           torch.Tensor]) -> str:
    """`forward_with_shortcut(block, x)` turns a plain block into a residual one.

    Checked on plain-56 with BatchNorm: with the student's forward in every block the net
    must compute what ResNet-56 (option A) with the same weights computes, and the gradient
    must reach the first block at about the scale it has at the last one.
    """
    x, y = _probe_batch(8)
    torch.manual_seed(0)
    plain = cifar_resnet(56, residual=False)
    reference = cifar_resnet(56, residual=True)
    # option A adds no parameters, so the plain net's weights load into the residual net
    reference.load_state_dict(plain.state_dict())
    patched = _patch(plain, forward_with_shortcut).train()
    reference.train()
    with torch.no_grad():
        out = patched(x)
        expected = reference(x)
    if out.shape != expected.shape:
        raise NotYet(f"the net's output has shape {tuple(out.shape)}, expected "
                     f"{tuple(expected.shape)}: does your forward return a tensor shaped like "
                     "the block's F(x)?")
    if not torch.allclose(out, expected, rtol=1e-4, atol=1e-5):
        raise NotYet("the net runs but does not compute ResNet-56: add the shortcut to F(x) "
                     "BEFORE the final ReLU, y = ReLU(F(x) + x) (He et al. 2015, Eq. 1 and "
                     "Fig. 2), and zero-pad x where the block changes shape (option A)")
    drift = drift_decades(gradient_norms(patched, x, y, activations=True,
                                         is_block=lambda m: isinstance(m, _Patched)))
    torch.manual_seed(0)
    plain_drift = drift_decades(gradient_norms(cifar_resnet(56, residual=False), x, y,
                                               activations=True))
    if not abs(drift) < 2:
        raise NotYet(f"the outputs match but the gradient still drifts by {drift:+.1f} "
                     "decades from the last block to the first")
    return (f"every block now adds its input back: the block-output gradient drifts by "
            f"{drift:+.1f} decades from the last block to the first, against "
            f"{plain_drift:+.1f} without the shortcut.")


# "slower to converge, or a worse optimum?": which experiment tells them apart
EXPERIMENTS = {
    "a": "compare plain-56's and plain-20's test errors in the stored run",
    "b": "train both nets again with budgets of 8, 16, 32 and 64 epochs (each with its own "
         "full schedule) and compare their final training errors",
    "c": "measure both nets' gradient norms at initialization on a larger batch",
}


@exercise
def check_experiment_design(my_experiment: object) -> str:
    """Which experiment separates 'plain-56 converges more slowly' from 'plain-56 ends at a
    worse optimum' (a choice among EXPERIMENTS)."""
    return judge_choice(
        my_experiment, "b", tuple(EXPERIMENTS), what="the experiment",
        why=("Only the training error at growing budgets answers it: a gap that shrinks toward "
             "0 as the budget grows means slower convergence; a gap that levels off above 0 "
             "means this optimizer settles at a worse point. Test error (a) mixes in "
             "generalization, and gradients at initialization (c) say nothing about where "
             "training ends (section 4: they level off within the first epoch)."))
