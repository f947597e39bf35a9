"""Checks for notebook 02 (gradient flow in plain and residual nets).

    check_grad_norm_loop(layer_grad_norms)          # write the per-layer gradient-norm loop
    check_drift_prediction(my_drift_per_conv)       # predict the drift from the init variance
    check_weight_spread(weight_spread, my_spread)   # how far apart the weight gradients are
    check_shortcut_forward(forward_with_shortcut)   # put the shortcut back in the right place
    check_experiment_design(my_experiment)          # slower to converge, or a worse optimum?
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..data import load_sample, normalize
from ..gradients import ACTIVATION, WEIGHT, GradientNorms, drift_decades, gradient_norms
from ..models import cifar_resnet
from .exercise import NotYet, close, exercise, judge_choice, judge_prediction, returned_none

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


_LOOP_STEPS = ("clear the gradients, one forward pass, the mean cross-entropy loss, one "
               ".backward(), then each conv/linear module's weight.grad.norm()")
_ZERO_AFTER_BACKWARD = ("your function clears the gradients after backward(): zero_grad() "
                        "throws away what backward() has just written, so {what} when you read "
                        "it. Clearing belongs before the forward pass (the first step), not "
                        "between backward() and reading .grad")


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _from_loss_module(e: BaseException) -> bool:
    """The error came out of constructing a loss module (nn.CrossEntropyLoss(logits, labels))."""
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "__init__" and code.co_filename.replace("\\", "/").endswith(
                "nn/modules/loss.py"):
            return True
        tb = tb.tb_next
    return False


def _loop_error(e: Exception, backward_ran: bool, model: nn.Module) -> str:
    """A hint, in the notebook's words, for an error the student's loop raised."""
    msg = str(e)
    if isinstance(e, AttributeError) and "NoneType" in msg:
        if backward_ran and all(m.weight.grad is None for m in _weight_layers(model)):
            return _ZERO_AFTER_BACKWARD.format(what=".grad is None")
        if not backward_ran:
            return ("a weight's .grad is None: no gradient has been computed yet. .grad is "
                    "filled by .backward() on the loss; read it after that call")
        return ("a weight's .grad is None although backward() ran: read .grad right after "
                "the backward pass, of the conv and linear modules only")
    if isinstance(e, AttributeError) and "has no attribute 'weight'" in msg:
        kind = msg.split("'")[1] if msg.count("'") >= 2 else "module"
        return (f"you read .weight of a {kind}, which has none: keep only the modules with "
                "isinstance(module, (nn.Conv2d, nn.Linear))")
    if isinstance(e, AttributeError) and "object has no attribute 'backward'" in msg:
        return ("you call .backward() on a Python number: .item() (or float()) cuts the loss "
                "off from its graph. Call .backward() on the loss tensor itself")
    if "does not require grad" in msg:
        return ("the loss has no graph to backpropagate through: the forward pass must run "
                "with gradients on (not inside torch.no_grad(), and without .detach())")
    if "implicitly created only for scalar outputs" in msg:
        return ("backward() needs one number: call it on the mean cross-entropy loss over "
                "the batch, not on the model's output or a loss per image")
    if "backward through the graph a second time" in msg:
        return ("backward() ran twice on the same graph: one forward pass, one .backward()")
    if ("not implemented for 'Long'" in msg or "Expected floating point type for target" in msg
            or "expected scalar type Long" in msg):
        return ("cross_entropy takes the model's output (the logits) first and the labels "
                "second: nn.functional.cross_entropy(logits, labels)")
    if _from_loss_module(e):
        return ("nn.CrossEntropyLoss is a class: its arguments are options, not the logits "
                "and labels. Make the loss first, then call it on the logits and the labels "
                "(or use nn.functional.cross_entropy)")
    first_line = msg.splitlines()[0] if msg else ""
    return (f"your function stopped with an error ({type(e).__name__}: {first_line}). Go "
            f"through the steps again: {_LOOP_STEPS}")


def _run_loop(layer_grad_norms: GradNormLoop, model: nn.Module, x: torch.Tensor,
              y: torch.Tensor) -> tuple[dict[str, float], bool]:
    """The student's norms and whether a backward pass reached the weights (a hook on the
    stem conv's weight sees it); an error in the student's code becomes a hint."""
    backward: list[bool] = []
    handle = model.conv1.weight.register_hook(lambda g: backward.append(True))
    try:
        got = layer_grad_norms(model, x, y)
    except NotImplementedError as e:
        if not str(e):  # the stub's own `raise NotImplementedError`
            raise
        raise NotYet(_loop_error(e, bool(backward), model)) from None
    except NotYet:
        raise
    except Exception as e:  # any error of the student's code: a hint, not a traceback
        raise NotYet(_loop_error(e, bool(backward), model)) from None
    finally:
        handle.remove()
    if got is None:
        raise returned_none(layer_grad_norms)
    return _as_norms(got), bool(backward)


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
    weights_before = [p.detach().clone() for p in model.parameters()]
    got, backward_ran = _run_loop(layer_grad_norms, model, x, y)
    if any(not torch.equal(p.detach(), w) for p, w in zip(model.parameters(), weights_before,
                                                          strict=True)):
        raise NotYet("your function changed the model's weights (an optimizer step?): it "
                     "measures the gradients of the model as it comes in, and leaves its "
                     "weights as they are")
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
    _compare(got, want, model, convs, backward_ran, x, y)
    again, backward_ran = _run_loop(layer_grad_norms, model, x, y)
    if all(close(again[n], 2 * want[n], rel=1e-3) for n in convs):
        raise NotYet("the first call is right, but a second call on the same model returns "
                     "twice the norms: .backward() ADDS to .grad. Call model.zero_grad() "
                     "before the forward pass")
    _compare(again, want, model, convs, backward_ran, x, y)
    return (f"your loop matches gradient_norms on all {len(want)} layers of plain-20 (conv1: "
            f"{got['conv1']:.3g}, fc: {got['fc']:.3g}). From here on the notebook uses "
            "gradient_norms, which also catches the block outputs and leaves no .grad behind.")


def _module_type(model: nn.Module, name: str) -> str | None:
    try:
        return type(model.get_submodule(name)).__name__
    except AttributeError:
        return None


def _slip_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict]:
    """What two usual slips return, on a copy of the model: cross-entropy on softmax
    probabilities, and the sum of absolute values instead of the Frobenius norm."""
    twin = copy.deepcopy(model).train()
    layers = {n: m for n, m in twin.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    weights = [m.weight for m in layers.values()]
    out = {}
    for slip, probabilities in (("softmax", True), ("l1", False)):
        logits = twin(x)
        loss = nn.functional.cross_entropy(logits.softmax(1) if probabilities else logits, y)
        grads = torch.autograd.grad(loss, weights)
        out[slip] = {n: float(g.abs().sum() if slip == "l1" else g.norm())
                     for n, g in zip(layers, grads, strict=True)}
    return out


def _compare(got: dict[str, float], want: dict[str, float], model: nn.Module,
             convs: list[str], backward_ran: bool, x: torch.Tensor, y: torch.Tensor) -> None:
    """NotYet naming the first layer that differs, with the likely reason."""
    if all(close(got[n], want[n], rel=1e-3, abs_=1e-12) for n in want):
        return
    slips = _slip_norms(model, x, y)
    if all(close(got[n], slips["softmax"][n], rel=1e-3, abs_=1e-12) for n in want):
        raise NotYet("your loss is the cross-entropy of the softmax probabilities: "
                     "nn.functional.cross_entropy applies the softmax itself and wants the "
                     "model's raw outputs (the logits)")
    if all(close(got[n], slips["l1"][n], rel=1e-3) for n in want):
        raise NotYet("you sum the absolute values of the gradient's entries; the Frobenius "
                     "norm is the square root of the sum of their squares (`.norm()`)")
    if backward_ran and all(v == 0 for v in got.values()) and all(
            m.weight.grad is not None and not m.weight.grad.any() for m in _weight_layers(model)):
        raise NotYet(_ZERO_AFTER_BACKWARD.format(what="every .grad is all zeros"))
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
    if all(getattr(m, "weight", None) is None or m.weight.grad is None
           for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        raise NotYet("the numbers differ from gradient_norms and no .grad was written: call "
                     "loss.backward() and read module.weight.grad")
    if not model.training:
        raise NotYet("your function left the model in eval mode, where BatchNorm uses its "
                     "running statistics instead of the batch's: measure in train mode, as "
                     "during training")
    first = next(n for n in want if not close(got[n], want[n], rel=1e-3, abs_=1e-12))
    raise NotYet(f"{first}: you have {got[first]:.4g}, gradient_norms measures "
                 f"{want[first]:.4g}. The steps, in train mode: {_LOOP_STEPS}")


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


def _drift_slip(guess: float) -> str | None:
    """What a drift prediction near a typical slip got wrong, or None."""
    factor = DEFAULT_INIT_N_VAR / 2  # on the second moment, per conv + ReLU: 1/6
    positive = {  # guesses above 0: a factor not yet in decades, or the right size
        math.sqrt(factor): f"{guess:.3g} is the factor on the scale, not yet in decades: a "
                           "change by a factor f is log10(f) decades",
        factor: f"{guess:.3g} is the factor on the second moment, not yet in decades: the "
                "scale (a norm) changes by its square root, and a factor f is log10(f) decades",
        -0.5 * math.log10(factor): f"right size, wrong sign: {guess:+.2f} decades per conv "
                                   "would make the gradient GROW toward the input. A factor "
                                   "below 1 shrinks it: its logarithm is negative",
    }
    if guess > 0:
        value = min(positive, key=lambda v: abs(guess - v))
        return positive[value] if close(guess, value, rel=0.15) else None
    slips = {  # value in decades: what it leaves out
        math.log10(factor): "you took log10 of the second-moment factor n Var(W)/2; the "
                            "gradient's scale (its norm) changes by the square root of that: "
                            "half as many decades",
        0.5 * math.log10(DEFAULT_INIT_N_VAR): "you left out the ReLU: it keeps half of the "
                                              "second moment, so the factor is n Var(W)/2",
        math.log10(DEFAULT_INIT_N_VAR): "you left out both the ReLU's half and the square "
                                        "root from second moment to scale",
        0.5 * math.log(factor): "that is the natural logarithm; decades are log10",
        math.log(factor): "that is the natural logarithm of the second-moment factor; decades "
                          "are log10, of the scale (its square root)",
        0.5 * math.log10(3 * factor): "the uniform distribution on ±b has variance b²/3, not "
                                      "b²: Var(W) = gain² / n",
    }
    value = min(slips, key=lambda v: abs(guess - v))
    return slips[value] if close(guess, value, rel=0.05) else None


@exercise
def check_drift_prediction(my_drift_per_conv: object) -> str:
    """The predicted change of the gradient's scale per conv + ReLU, in decades, for a plain
    net without BatchNorm under PyTorch's default init; measured on plain-56."""
    actual = measured_drift_per_conv(56)
    theory = 0.5 * math.log10(DEFAULT_INIT_N_VAR / 2)
    why = (f"Var(W) = gain²·(3/n)/3 = 1/(3n), so n Var(W)/2 = {DEFAULT_INIT_N_VAR / 2:.3f} "
           f"per conv + ReLU on the second moment, log10(sqrt({DEFAULT_INIT_N_VAR / 2:.3f})) "
           f"= {theory:+.2f} decades on the scale; over plain-56's 52 convs that is "
           f"{52 * actual:+.0f} decades.")
    if (isinstance(my_drift_per_conv, (int, float)) and not isinstance(my_drift_per_conv, bool)
            and not close(my_drift_per_conv, actual, rel=0.15)):
        slip = _drift_slip(float(my_drift_per_conv))
        if slip:
            raise NotYet(f"you predicted {my_drift_per_conv:.3g}: {slip}")
    return judge_prediction(my_drift_per_conv, actual,
                            what="the drift per conv + ReLU (decades)", rel=0.15, why=why)


def _exploding_resnet56() -> GradientNorms:
    """ResNet-56 without BatchNorm under Kaiming init: the net whose block-output gradient
    grows by several decades toward the input (section 3)."""
    return gradient_norms(_seeded(56, residual=True, init="kaiming", norm_layer=nn.Identity),
                          *_probe_batch(), activations=True)


def _spread_error(e: Exception) -> str:
    first_line = str(e).splitlines()[0] if str(e) else ""
    return (f"your weight_spread stopped with an error ({type(e).__name__}: {first_line}). It "
            "gets a GradientNorms table: table.of_kind('weight') gives the weight rows, and "
            "each row's .norm is that layer's gradient norm, a float")


@exercise
def check_weight_spread(weight_spread: Callable[[GradientNorms], float],
                        my_spread: object) -> str:
    """`weight_spread(table)` returns log10(largest / smallest) weight-gradient norm over the
    conv/fc rows; `my_spread` is the student's guess of it for ResNet-56 without BatchNorm
    under Kaiming init, whose block-output gradient explodes toward the input."""
    table = _exploding_resnet56()
    norms = [r.norm for r in table.of_kind(WEIGHT)]
    want = math.log10(max(norms) / min(norms))
    try:
        got = weight_spread(table)
    except NotImplementedError as e:
        if not str(e):  # the stub's own `raise NotImplementedError`
            raise
        raise NotYet(_spread_error(e)) from None
    except Exception as e:  # any error of the student's code: a hint, not a traceback
        raise NotYet(_spread_error(e)) from None
    if got is None and my_spread is not Ellipsis:
        raise returned_none(weight_spread, "your weight_spread")
    if got is None or got is Ellipsis or my_spread is Ellipsis:  # still `...`
        raise NotImplementedError
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise NotYet(f"weight_spread should return one number (decades), got {got!r}")
    every = [r.norm for r in table.rows]
    if close(got, -want, rel=1e-6):
        raise NotYet("right size, wrong sign: take log10(largest / smallest), not the inverse")
    if close(got, max(norms) / min(norms), rel=1e-6):
        raise NotYet("that is the ratio itself; in decades it is its log10")
    if close(got, math.log(max(norms) / min(norms)), rel=1e-6):
        raise NotYet("that is the natural logarithm of the ratio; decades are log10")
    if close(got, math.log10(max(every) / min(every)), rel=1e-6):
        raise NotYet("your spread includes the block-output rows; use only the weight rows, "
                     "table.of_kind('weight')")
    if not close(got, want, rel=1e-6):
        raise NotYet(f"weight_spread returns {got:.4g}, but log10(max / min) of the weight "
                     f"rows' norms is {want:.4g}")
    if isinstance(my_spread, bool) or not isinstance(my_spread, (int, float)):
        raise NotYet(f"my_spread should be a number of decades, got {my_spread!r}")
    drift = drift_decades(table)
    why = ("A weight gradient is the outer product δ x^T (section 1): δ grows toward the "
           "input, but the forward signal x grows toward the output, each addition doubling "
           "its variance (section 3), so the product comes out nearly level.")
    if abs(my_spread - want) > 1:
        near = (f"close to the block-output gradient's drift ({drift:+.1f} decades on the "
                "check's images), " if abs(abs(my_spread) - abs(drift)) < 1.5 else "")
        raise NotYet(f"your function is right and measures {want:.2f} decades; your guess of "
                     f"{my_spread:.3g} is {near}more than a decade off. {why}")
    return (f"the weight gradients span {want:.2f} decades, although the block-output gradient "
            f"drifts by {drift:+.1f} on the same 16 images. {why}")


class _ShapeClash(Exception):
    """The student's forward failed in a block whose F(x) and x differ in shape."""


# Option A leaves open which output channels hold x and which the zeros: the library's
# ZeroPadShortcut appends the zeros, popular CIFAR code (akamaster's and kuangliu's option A)
# pads planes//4 channels on each side, and zeros first is as good. Each is option A; each
# gives another output for the same weights, so the check compares with all three.
_PLACEMENTS = {"after x's channels (as ZeroPadShortcut)": 0.0,
               "on both sides (planes//4 each, as popular CIFAR code)": 0.5,
               "before x's channels": 1.0}


class _OptionA(nn.Module):
    """Option A with the zero channels placed `before` (a fraction of them) x's channels."""

    def __init__(self, out_channels: int, stride: int, before: float) -> None:
        super().__init__()
        self.out_channels, self.stride, self.before = out_channels, stride, before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        first = int(extra * self.before)
        return nn.functional.pad(x, (0, 0, 0, 0, first, extra - first))


def _shape(shape: tuple[int, ...]) -> str:
    return "(B, " + ", ".join(map(str, shape[1:])) + ")"


_BLOCK_PARTS = ("block.residual_branch(x) (F), block.relu, and block.inplanes, "
                "block.out_channels and block.stride")


def _forward_error(e: Exception, name: str, f_shape: tuple[int, ...],
                   x_shape: tuple[int, ...]) -> str:
    """A hint, in the notebook's words, for an error the student's forward raised."""
    msg = str(e)
    if isinstance(e, TypeError) and "'NoneType' object is not callable" in msg:
        return ("a plain block has no shortcut module (its downsample is None): build the "
                "shortcut yourself, option A, where F(x) and x differ in shape")
    if isinstance(e, AttributeError) and "object has no attribute" in msg:
        attribute = msg.rsplit("attribute", 1)[-1].strip(" '")
        return (f"the plain block has no `{attribute}`. What it gives you: {_BLOCK_PARTS}")
    if "option A can only add channels" in msg:
        return ("ZeroPadShortcut(in_channels, out_channels, stride) takes x's channels first "
                "and F(x)'s second: block.inplanes, block.out_channels, block.stride")
    if f_shape == x_shape and isinstance(e, RuntimeError) and "size of tensor" in msg:
        return (f"in {name}, where F(x) and x have the same shape {_shape(f_shape)}, your "
                "shortcut changes x's shape: fit x only where the shapes differ")
    first_line = msg.splitlines()[0] if msg else ""
    return (f"in {name} your forward stopped with an error ({type(e).__name__}: "
            f"{first_line}). What the block gives you: {_BLOCK_PARTS}")


def _call_forward(forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                  block: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The student's forward on one block; an error in it becomes a hint."""
    try:
        out = forward(block, x)
    except NotImplementedError as e:
        if not str(e):  # the stub's own `raise NotImplementedError`
            raise
        error: Exception = e
    except (NotYet, _ShapeClash):
        raise
    except Exception as e:  # any error of the student's code: a hint, not a traceback
        error = e
    else:
        if out is Ellipsis:  # the body is still `...`
            raise NotImplementedError
        if out is None:  # the stub, or no `return`
            raise returned_none(forward)
        return out
    with torch.no_grad():
        f_shape = tuple(block.residual_branch(x.detach().clone()).shape)
    x_shape = tuple(x.shape)
    if (f_shape != x_shape and isinstance(error, RuntimeError)
            and "size of tensor" in str(error)):
        found = re.search(r"non-singleton dimension (\d)", str(error))
        raise _ShapeClash(name, f_shape, x_shape, int(found[1]) if found else None) from None
    raise NotYet(_forward_error(error, name, f_shape, x_shape)) from None


class _Patched(nn.Module):
    """A block whose forward is the student's function of (block, x)."""

    def __init__(self, block: nn.Module, forward: Callable[[nn.Module, torch.Tensor],
                                                            torch.Tensor], name: str) -> None:
        super().__init__()
        self.block, self.fn, self.name = block, forward, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _call_forward(self.fn, self.block, x, self.name)


def _patch(model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
           ) -> nn.Module:
    for s, stage in enumerate((model.layer1, model.layer2, model.layer3), 1):
        for i, block in enumerate(stage):
            stage[i] = _Patched(block, forward, f"layer{s}.{i}")
    return model


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _one_block(forward: Callable[[nn.Module, torch.Tensor], torch.Tensor], block: nn.Module,
               x: torch.Tensor, name: str) -> str | None:
    """NotYet if the student's forward of one plain block is not the residual one; where the
    block changes the shape, the placement of option A's zero channels it used."""
    with torch.no_grad():
        out = _call_forward(forward, block, x.clone(), name)
        f = block.residual_branch(x.clone())
        if not isinstance(out, torch.Tensor) or out.shape != f.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise NotYet(f"in {name} your forward returns {got}, expected {_shape(f.shape)}: "
                         "return a tensor shaped like the block's F(x)")
        if f.shape == x.shape:
            shortcuts = {None: x}
        else:
            shortcuts = {where: _OptionA(f.shape[1], block.stride, before)(x)
                         for where, before in _PLACEMENTS.items()}
        for where, s in shortcuts.items():
            if _same(out, torch.relu(f + s)):
                return where
        if any(_same(out, torch.relu(f) + s) for s in shortcuts.values()):
            raise NotYet("you add x AFTER the block's last ReLU, ReLU(F(x)) + x: the shortcut "
                         "goes in before it, y = ReLU(F(x) + x) (He et al. 2015, Eq. 1, Fig. 2)")
        if _same(out, torch.relu(f)):
            if f.shape == x.shape:
                raise NotYet("your forward returns ReLU(F(x)), the plain block: add the input x")
            raise NotYet(f"in {name} (F(x) is {_shape(f.shape)}, x is {_shape(x.shape)}) your "
                         "forward adds nothing: ResNet-56 adds a shortcut in the blocks that "
                         "change the shape too, x fitted to F(x)'s shape by option A")
        if f.shape == x.shape:
            raise NotYet(f"in {name}, a block that keeps the shape, your forward differs from "
                         "ReLU(F(x) + x) (He et al. 2015, Eq. 1 and Fig. 2)")
        raise NotYet(f"the blocks that keep the shape are right, but in {name} (F(x) is "
                     f"{_shape(f.shape)}, x is {_shape(x.shape)}) your shortcut is not option "
                     "A, the one of the CIFAR ResNet-56: option A has no weights (a 1x1 "
                     "projection is option B, which adds weights ResNet-56 does not have); it "
                     "subsamples x with the block's stride and fills the extra channels with "
                     "zeros")


def _option_a_resnet56(plain: nn.Module, before: float) -> nn.Module:
    """ResNet-56 with plain-56's weights and option A's zeros placed as `before` says."""
    net = cifar_resnet(56, residual=True)
    # option A adds no parameters, so the plain net's weights load into the residual net
    net.load_state_dict(plain.state_dict())
    for stage in (net.layer1, net.layer2, net.layer3):
        for block in stage:
            if block.downsample is not None:
                block.downsample = _OptionA(block.out_channels, block.stride, before)
    return net.train()


@exercise
def check_shortcut_forward(forward_with_shortcut: Callable[[nn.Module, torch.Tensor],
                                                           torch.Tensor]) -> str:
    """`forward_with_shortcut(block, x)` turns a plain block into a residual one.

    Checked on plain-56 with BatchNorm: first one block that keeps the shape and one that
    changes it (layer2.0), each against the residual block with the same weights (option A,
    its zero channels after, around or before x's channels); then the whole net with the
    student's forward in every block against ResNet-56 with the same weights and the same
    option A, and the gradient's drift.
    """
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random state as it was
        torch.manual_seed(0)
        return _check_shortcut_forward(forward_with_shortcut)


def _check_shortcut_forward(forward_with_shortcut: Callable[[nn.Module, torch.Tensor],
                                                            torch.Tensor]) -> str:
    x, y = _probe_batch(8)
    plain = cifar_resnet(56, residual=False).train()
    try:
        with torch.no_grad():
            h = plain.layer1(plain.relu(plain.bn1(plain.conv1(x))))  # the input of layer2
            h = _option_a_resnet56(plain, 0.0).layer1(h)  # what ResNet-56's layer1 makes
        _one_block(forward_with_shortcut, plain.layer1[1], h, "layer1.1")
        where = _one_block(forward_with_shortcut, plain.layer2[0], h, "layer2.0")
        reference = _option_a_resnet56(plain, _PLACEMENTS[where])
        patched = _patch(plain, forward_with_shortcut)
        with torch.no_grad():
            out, expected = patched(x), reference(x)
    except _ShapeClash as e:
        name, f_shape, x_shape, dim = e.args
        still = {1: " Your addition still fails on the channels (C): option A fills the new "
                    "channels with zeros",
                 2: " Your addition still fails on the height (H): option A keeps every "
                    "other row of x (the block's stride)",
                 3: " Your addition still fails on the width (W): option A keeps every other "
                    "column of x (the block's stride) (and if you used F.pad: its pairs start "
                    "from the last dimension, W, then H, then C)"}.get(dim, "")
        raise NotYet(f"in {name} F(x) is {_shape(f_shape)} but x is {_shape(x_shape)}: the "
                     "first block of a stage halves H and W and doubles the channels, so x "
                     "must be brought to F(x)'s shape before the addition, with option A as "
                     f"the exercise says.{still}") from None
    if not torch.allclose(out, expected, rtol=1e-4, atol=1e-5):
        raise NotYet("every block checked alone is right, but the whole net differs from "
                     "ResNet-56: does your forward change the block or x in place?")
    try:
        table = gradient_norms(patched, x, y, activations=True,
                               is_block=lambda m: isinstance(m, _Patched))
    except RuntimeError as e:
        if "does not require grad" not in str(e):
            raise
        raise NotYet("the outputs match, but no gradient flows through your forward: it "
                     "must not run under torch.no_grad() or .detach() its tensors") from None
    norms = table.norms(ACTIVATION)
    if not norms or norms[0] == 0:
        raise NotYet("the outputs match, but no gradient reaches the first blocks: does your "
                     "forward .detach() a tensor? The gradient must flow back through both paths")
    drift = drift_decades(table)
    if not abs(drift) < 2:
        raise NotYet(f"the outputs match but the gradient still drifts by {drift:+.1f} "
                     "decades from the last block to the first: does your shortcut .detach() "
                     "x? The gradient must flow back through it too")
    padding = ("" if where == next(iter(_PLACEMENTS)) else
               f" Your zero channels sit {where.split(' (')[0]}; ZeroPadShortcut appends them: "
               "both are option A, and each gives another output for the same weights.")
    return (f"every block now adds its input back, and the net computes ResNet-56 (option A)."
            f"{padding} On the check's 8 images the block-output gradient drifts by "
            f"{drift:+.1f} decades from the last block to the first, within 2 decades like "
            "the ResNets of section 2.")


# "slower to converge, or a worse optimum?": which experiment tells them apart
EXPERIMENTS = {
    "a": "compare plain-56's and plain-20's test errors, epoch by epoch, in the stored run",
    "b": "train both nets again with budgets of 8, 16, 32 and 64 epochs, each with its own "
         "full schedule, and compare their final training errors",
    "c": "train plain-56 again for 64 epochs with its own full schedule and compare its final "
         "training error with plain-20's in the stored run",
    "d": "continue the stored plain-56 run for 56 more epochs at its final learning rate and "
         "watch whether its training error keeps falling",
}


@exercise
def check_experiment_design(my_experiment: object) -> str:
    """Which experiment separates 'plain-56 converges more slowly' from 'plain-56 ends at a
    worse optimum' (a choice among EXPERIMENTS)."""
    return judge_choice(
        my_experiment, "b", tuple(EXPERIMENTS), what="the experiment",
        why=("Only the training error at growing budgets answers it: a gap that shrinks toward "
             "0 as the budget grows means slower convergence; a gap that levels off above 0 is "
             "evidence that this optimizer settles at a worse point (over a limited range of "
             "budgets, very slow convergence can look the same). Test error (a) mixes in "
             "generalization; one 64-epoch run (c) gives one gap, against a plain-20 of "
             "another budget, and one gap cannot show a trend; the stored schedule ends at a "
             "learning rate of 0 (d), so more steps at it leave the weights where they are."))
