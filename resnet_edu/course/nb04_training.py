"""Checks for notebook 04 (training ResNet-18 on CIFAR-10). The trainer's rules, and `fit`
itself, are the oracle."""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..augment import DeviceLoader
from ..data import load_sample
from ..recipe import (
    TrainConfig,
    build_model,
    lr_at,
    param_groups,
    preset,
    smoothed_loss_floor,
    train_resolution,
)
from ..train import fit, lr_schedule, make_parts, training_images
from .exercise import NotYet, close, exercise, names_used, one_thread, require_prediction
from .nb05_bug_hunt import called_from_library, raised_in_library


def _small_model() -> nn.Module:
    from ..models import resnet18_cifar

    return resnet18_cifar(width=4)


def _plain_net() -> nn.Module:
    """The check's second net: a conv with a bias, BatchNorm, a linear layer, in a Sequential
    whose parameter names (0.weight, 0.bias, 1.weight, ...) say nothing about their kind."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


# the kinds of parameter in the exercise's nets, and whether the recipe decays each
_KINDS = {
    "conv kernel": True, "shortcut conv kernel (1x1)": True, "linear matrix": True,
    "BatchNorm scale (gamma)": False, "BatchNorm shift (beta)": False,
    "conv bias": False, "linear bias": False,
}


def _kinds(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """Every parameter of `model` by name, with its kind (a key of `_KINDS`)."""
    kinds = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if isinstance(module, nn.Conv2d):
                kind = ("conv bias" if pname == "bias" else
                        "shortcut conv kernel (1x1)" if "downsample" in mname else "conv kernel")
            elif isinstance(module, nn.Linear):
                kind = "linear bias" if pname == "bias" else "linear matrix"
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                kind = "BatchNorm shift (beta)" if pname == "bias" else "BatchNorm scale (gamma)"
            else:
                raise TypeError(f"no kind for {name} in {type(module).__name__}")
            kinds[name] = (kind, p)
    return kinds


def parameter_kinds(model: nn.Module) -> list[tuple[str, int, str, tuple[int, ...]]]:
    """The kinds of parameter in `model`: (kind, how many tensors, an example name, its
    shape), in the order they first appear. For the table above Exercise 2."""
    rows: dict[str, list] = {}
    for name, (kind, p) in _kinds(model).items():
        if kind not in rows:
            rows[kind] = [kind, 0, name, tuple(p.shape)]
        rows[kind][1] += 1
    return [tuple(r) for r in rows.values()]


def _relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    return float((after - before).norm() / before.norm())


def _decay_effects() -> dict[str, float]:
    """What one shrink by 10 % (what weight decay does, a little at a time) changes, measured
    on the first block of a width-4 ResNet-18 in training mode: the output of its first
    BatchNorm when the conv kernel in front of it shrinks, and when its scale gamma shrinks;
    the logits when the final linear matrix shrinks."""
    torch.manual_seed(0)
    model = _small_model().train()
    block = model.layer1[0]
    x = torch.randn(16, 4, 8, 8)
    with torch.no_grad():
        out = block.bn1(block.conv1(x))
        block.conv1.weight.mul_(0.9)
        conv = _relative_change(out, block.bn1(block.conv1(x)))
        block.conv1.weight.div_(0.9)
        block.bn1.weight.mul_(0.9)
        gamma = _relative_change(out, block.bn1(block.conv1(x)))
        features = torch.randn(16, model.fc.in_features)
        logits = model.fc(features)
        model.fc.weight.mul_(0.9)
        linear = _relative_change(logits, model.fc(features))
    return {"conv": conv, "gamma": gamma, "linear": linear}


def _percent(x: float) -> str:
    return f"{100 * x:.0f} %" if x >= 0.005 else "less than 0.01 %"


def _named_pairs(items: list) -> bool:
    return any(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in items)


def _judge_split(fn: Callable, model: nn.Module, where: str) -> tuple[int, int]:
    """Raise NotYet naming the first wrong decision of `fn` on `model`; else the counts."""
    result = fn(model)
    if result is None:
        raise NotImplementedError
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise NotYet(f"return a pair of lists (decayed, not_decayed), got "
                     f"{type(result).__name__}" + (f" of length {len(result)}"
                                                   if isinstance(result, (tuple, list)) else ""))
    if any(isinstance(r, dict) for r in result):
        raise NotYet("you returned the optimizer's parameter groups, dicts like "
                     "{'params': ..., 'weight_decay': ...}: return the two lists of parameters "
                     "themselves, (decayed, not_decayed); the trainer builds the groups from "
                     "them.")
    decay, no_decay = (list(r) for r in result)
    if _named_pairs(decay + no_decay):
        raise NotYet("your lists hold (name, parameter) pairs, as named_parameters() gives "
                     "them: the optimizer wants the parameters alone.")
    if any(isinstance(p, str) for p in decay + no_decay):
        raise NotYet("your lists hold the parameters' names: the optimizer wants the "
                     "parameters themselves (the nn.Parameter objects).")
    if any(not isinstance(p, nn.Parameter) for p in decay + no_decay):
        bad = next(p for p in decay + no_decay if not isinstance(p, nn.Parameter))
        raise NotYet("both lists should hold the model's parameters (nn.Parameter objects), "
                     f"found a {type(bad).__name__}")
    kinds = _kinds(model)
    name_of = {id(p): n for n, (_, p) in kinds.items()}
    if any(id(p) not in name_of for p in decay + no_decay):
        raise NotYet("your lists hold a parameter that is not one of this model's: build them "
                     "from the model you are given")
    in_decay, in_no = {id(p) for p in decay}, {id(p) for p in no_decay}
    both = [n for n, (_, p) in kinds.items() if id(p) in in_decay & in_no]
    if both:
        raise NotYet(f"{where}{both[0]} is in both lists: each parameter goes in exactly one "
                     "(the optimizer refuses a parameter that appears in two groups)")
    if len(decay) != len(in_decay) or len(no_decay) != len(in_no):
        raise NotYet(f"{where}a parameter appears twice in one list: each goes in once")
    missing = [n for n, (_, p) in kinds.items() if id(p) not in in_decay | in_no]
    if missing:
        raise NotYet(f"{where}{len(missing)} parameters are in neither list, e.g. "
                     f"{missing[0]}: every parameter must go somewhere")
    should = {id(p) for _, (kind, p) in kinds.items() if _KINDS[kind]}
    if in_decay and in_decay == {id(p) for _, p in kinds.values()} - should:
        raise NotYet("your pair is the other way round: return (decayed, not_decayed), the "
                     "parameters that get weight decay first")
    effect = _decay_effects()
    for name, (kind, p) in kinds.items():
        decayed = id(p) in in_decay
        if decayed == _KINDS[kind]:
            continue
        shape = tuple(p.shape)
        if kind == "BatchNorm scale (gamma)":
            raise NotYet(
                f"{where}{name} {shape} is a BatchNorm scale gamma (its name ends in "
                "`.weight`, but it scales one channel, it mixes nothing): it should not be "
                "decayed in this recipe. Decay on gamma shrinks what the net computes: 10 % "
                f"less gamma changes its BatchNorm's output by {_percent(effect['gamma'])}, "
                "while 10 % less of the conv kernel in front of it changes it by "
                f"{_percent(effect['conv'])} (BatchNorm divides that scale out).")
        if kind == "BatchNorm shift (beta)":
            raise NotYet(f"{where}{name} {shape} is a BatchNorm shift beta, one offset per "
                         "channel: it should not be decayed in this recipe (decay would pull "
                         "every channel's offset toward 0, a constraint on what the net "
                         "computes, not on a layer's weights).")
        if kind in ("conv bias", "linear bias"):
            raise NotYet(f"{where}{name} {shape} is a {kind}, one offset per output: it "
                         "should not be decayed in this recipe (Bag of Tricks, Sec. 3.1, "
                         "'no bias decay').")
        if kind == "linear matrix":
            raise NotYet(
                f"{where}{name} {shape} is the linear layer's matrix, and it should be "
                "decayed too. No BatchNorm follows it: 10 % less of it changes the logits by "
                f"{_percent(effect['linear'])}, so decay on it limits how large the logits "
                "grow.")
        what = ("the 1x1 conv kernel of a shortcut" if kind.startswith("shortcut")
                else "a conv kernel")
        raise NotYet(
            f"{where}{name} {shape} is {what}, and it should be decayed like every kernel "
            "that mixes channels. With a BatchNorm after it, decay does not change what the "
            f"layer computes (10 % less of it changes the BatchNorm's output by "
            f"{_percent(effect['conv'])}), but without decay its norm grows during training "
            "and the effective step size, lr / |w|^2, shrinks (van Laarhoven 2017).")
    return len(decay), len(no_decay)


@exercise
def check_split_parameters(fn: Callable[[nn.Module], tuple[list, list]]) -> str:
    """Exercise 2: `fn(model)` -> (decayed, not_decayed) parameter lists: conv and linear
    weights decayed; BatchNorm scales and shifts and every bias not (as `param_groups`).
    Checked on a width-4 ResNet-18 and on a small Sequential; a function that calls the
    trainer's `param_groups` is refused."""
    if "param_groups" in names_used(fn):
        raise NotYet("your function calls param_groups, the trainer's own split: the "
                     "exercise is to decide, kind by kind, which parameters get decay.")
    decay, no_decay = _judge_split(fn, _small_model(), "")
    model = _small_model()
    expected = [len(g["params"]) for g in param_groups(model, 1.0)]
    assert expected == [decay, no_decay], "the kinds disagree with the trainer's param_groups"
    _judge_split(fn, _plain_net(), "on the check's second net (a Sequential: conv with a "
                 "bias, BatchNorm, linear; its parameters are named 0.weight, 0.bias, 1.weight, "
                 "...), ")
    return (f"{decay} weight tensors decayed (conv kernels, the shortcuts' 1x1 kernels, the "
            f"linear matrix), {no_decay} not (BatchNorm scales and shifts, biases), on both "
            "nets: the trainer's split.")


# the schedules the one-cycle check compares, step by step: (total_steps, peak_lr, warm-up
# fraction); 13 x 0.3 = 3.9 warm-up steps tells round() from int()
ONE_CYCLE_CASES = [(100, 0.4, 0.2), (37, 0.1, 0.25), (10, 1.0, 0.0), (250, 0.05, 0.5),
                   (13, 0.3, 0.3)]


def _schedule(fn: Callable, total: int, peak: float, warmup: float) -> list[float]:
    rates = []
    for step in range(total):
        try:
            got = fn(step, total, peak, warmup)
        except NotImplementedError:
            raise
        except ZeroDivisionError as e:
            if round(warmup * total) == 0:
                raise NotYet(f"with warmup_fraction {warmup} there are no warm-up steps "
                             f"(warm = 0), and your function divided by zero at step {step} "
                             f"({e}): with no warm-up, the schedule starts its decay at "
                             "step 0.") from None
            raise NotYet(f"your function divided by zero at step {step} of {total} (peak "
                         f"{peak}, warm-up fraction {warmup}): {e}") from None
        except Exception as e:
            raise NotYet(f"your function raised {type(e).__name__} at step {step} of {total} "
                         f"(peak {peak}, warm-up fraction {warmup}): {e}") from None
        if got is None or got is Ellipsis:
            raise NotImplementedError
        if isinstance(got, bool) or not (isinstance(got, numbers.Real) or
                                         (torch.is_tensor(got) and got.numel() == 1)):
            raise NotYet(f"return a number, got {type(got).__name__}")
        rates.append(float(got))
    return rates


def _same(a: float, b: float) -> bool:
    return close(a, b, rel=1e-6, abs_=1e-9)


def _judge_warmup(got: list[float], total: int, peak: float, warmup: float) -> None:
    warm = round(warmup * total)
    case = f"(total_steps {total}, peak_lr {peak}, warmup_fraction {warmup})"
    truncated = int(warmup * total)
    if truncated != warm:
        config = TrainConfig(lr=peak, warmup=truncated / total, schedule="onecycle")
        if all(_same(a, lr_at(i, total, config)) for i, a in enumerate(got)):
            raise NotYet(f"{case}: your warm-up has {truncated} steps, but {warmup} x {total} "
                         f"= {warmup * total:g} warm-up steps should be rounded to {warm}, "
                         "not truncated: use round().")
    if warm > 0 and _same(got[0], 0.0):
        raise NotYet(f"{case}: step 0 ran at rate 0, a step that changes nothing. The "
                     "warm-up's first step should already move the weights; the rise should "
                     f"be linear and reach peak_lr on the last warm-up step, step {warm - 1}.")
    if warm > 0 and not _same(got[warm - 1], peak):
        raise NotYet(f"{case}: the last warm-up step, step {warm - 1}, should be at peak_lr "
                     f"= {peak:g}, got {got[warm - 1]:.5g}. Count the warm-up steps: the rise "
                     "is linear, in equal increments, and step 0 is the first of them.")
    rises = [b - a for a, b in itertools.pairwise(got[:warm])]
    if warm > 1 and not all(_same(d, rises[0]) for d in rises):
        raise NotYet(f"{case}: the warm-up should be linear (equal increments), but your "
                     f"increments go from {rises[0]:.3g} to {rises[-1]:.3g}.")
    if warm > 1 and not _same(got[0], rises[0]):
        raise NotYet(f"{case}: the warm-up should be linear from 0, one equal increment per "
                     f"step (step 0 one increment up), but step 0 is at {got[0]:.5g} and "
                     f"each step adds {rises[0]:.5g}.")


def _judge_decay(got: list[float], total: int, peak: float, warmup: float) -> None:
    warm = round(warmup * total)
    case = f"(total_steps {total}, peak_lr {peak}, warmup_fraction {warmup})"
    if not _same(got[warm], peak):
        raise NotYet(f"{case}: the first step after the warm-up, step {warm}, should be at "
                     f"peak_lr = {peak:g}, got {got[warm]:.5g}: the decay starts from the "
                     "peak.")
    if not _same(got[-1], 0.0):
        raise NotYet(f"{case}: the last step, step {total - 1}, should be at 0, got "
                     f"{got[-1]:.5g}: the run ends before the rate has annealed to 0. Count "
                     f"the steps from step {warm} (the peak) to step {total - 1} (zero).")
    falls = [a - b for a, b in itertools.pairwise(got[warm:])]
    if falls and not all(_same(d, falls[0]) for d in falls):
        raise NotYet(f"{case}: the decay should be linear (equal decrements), but yours go "
                     f"from {falls[0]:.3g} to {max(falls):.3g}: a curve, not a straight line.")


@exercise
def check_one_cycle(fn: Callable[[int, int, float, float], float]) -> str:
    """Exercise 3: `fn(step, total_steps, peak_lr, warmup_fraction)` -> the one-cycle lr,
    written out (a function that calls the library's `lr_at` is refused). Compared at every
    step of `ONE_CYCLE_CASES`; a wrong schedule is told which rule it breaks."""
    if "lr_at" in names_used(fn):
        raise NotYet("your function calls lr_at, the library's own schedule: the exercise is "
                     "to write the rule yourself, from the description above.")
    for total, peak, warmup in ONE_CYCLE_CASES:
        got = _schedule(fn, total, peak, warmup)
        config = TrainConfig(lr=peak, warmup=warmup, schedule="onecycle")
        want = [lr_at(step, total, config) for step in range(total)]
        if all(_same(a, b) for a, b in zip(got, want, strict=True)):
            continue
        _judge_warmup(got, total, peak, warmup)
        _judge_decay(got, total, peak, warmup)
        step = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if not _same(a, b))
        phase = "warm-up" if step < round(warmup * total) else "decay"
        raise NotYet(f"at step {step} of {total} (peak {peak}, warm-up fraction {warmup}, in "
                     f"the {phase}) the lr should be {want[step]:.5g}, got {got[step]:.5g}")
    return ("your schedule matches the trainer's one-cycle rule at every step of "
            f"{len(ONE_CYCLE_CASES)} schedules.")


# --- one training epoch, written by the student, checked against `fit` ----------------------

# The recipe of the epoch exercise: the smoke preset at width 4, one epoch of 8 batches of 64
# sample images, in float32 and the default memory format: about a second on any CPU.
EPOCH_RECIPE = dict(width=4, epochs=1, batch_size=64, train_subset=512, tta=False,
                    amp="off", channels_last=False)


@dataclass
class EpochParts:
    """What one epoch needs, built as `fit` builds it for `config` on the CIFAR-10 sample."""

    model: nn.Module
    loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    config: TrainConfig


def epoch_config() -> TrainConfig:
    """The recipe of the epoch exercise (`EPOCH_RECIPE` on the smoke preset)."""
    return preset("smoke", **EPOCH_RECIPE)


def epoch_parts(config: TrainConfig | None = None) -> EpochParts:
    """A fresh model (seeded with `config.seed`) and the loader, optimizer, per-step schedule
    and loss `fit` would use for its first epoch. The model is in eval mode, as an evaluation
    leaves it. The schedule is a `LambdaLR` that sets the rate of step i to `lr_at(i, ...)`."""
    config = config or epoch_config()
    torch.manual_seed(config.seed)
    model = build_model(config).eval()
    parts = make_parts(model, training_images(load_sample(), config), config, "cpu")
    loader = parts.loader
    loader.set_epoch(0)
    loader.size = train_resolution(0, config)
    scheduler = lr_schedule(parts.optimizer, config, config.epochs * len(loader))
    return EpochParts(model, loader, parts.optimizer, scheduler, parts.criterion, config)


def fit_one_epoch(config: TrainConfig | None = None) -> nn.Module:
    """The oracle: the same seeded model after one epoch of `fit` with the same recipe."""
    config = config or epoch_config()
    torch.manual_seed(config.seed)
    model = build_model(config)
    fit(model, load_sample(), config, device="cpu", eval_splits=(), progress=False,
        verbose=False)
    return model


@dataclass
class _Watch:
    """What the student's epoch did, seen through hooks on the model, the loss and the
    optimizer."""

    train_mode: list[bool] = field(default_factory=list)  # per forward pass
    library: list[bool] = field(default_factory=list)  # per forward: run by resnet_edu's code
    scheduler_args: list[tuple] = field(default_factory=list)  # per scheduler.step(...)
    events: list[str] = field(default_factory=list)  # "backward" and "step", in order
    losses: int = 0  # calls of the criterion
    stale: list[bool] = field(default_factory=list)  # per backward: an old gradient was there
    lrs: list[float] = field(default_factory=list)  # per optimizer step
    zero_at_step: list[bool] = field(default_factory=list)  # per step: the gradient was zero


def _watch(parts: EpochParts) -> tuple[_Watch, list]:
    seen, first = _Watch(), next(parts.model.parameters())  # the stem conv's weight

    def grad_is_zero() -> bool:
        return first.grad is None or not bool(first.grad.abs().sum() > 0)

    def on_step(opt, args, kwargs):
        seen.lrs.append(opt.param_groups[0]["lr"])
        seen.zero_at_step.append(grad_is_zero())
        seen.events.append("step")

    def on_backward(grad):
        seen.stale.append(not grad_is_zero())
        seen.events.append("backward")

    def on_forward(module, args):
        seen.train_mode.append(module.training)
        seen.library.append(called_from_library(__file__))

    step = parts.scheduler.step

    def scheduler_step(*args, **kwargs):
        seen.scheduler_args.append(args + tuple(kwargs.values()))
        return step(*args, **kwargs)

    parts.scheduler.step = scheduler_step  # this object's only: the check made it
    handles = [
        parts.model.register_forward_pre_hook(on_forward),
        parts.criterion.register_forward_pre_hook(
            lambda m, a: setattr(seen, "losses", seen.losses + 1)),
        first.register_hook(on_backward),
        parts.optimizer.register_step_pre_hook(on_step),
    ]
    return seen, handles


def _largest_difference(mine: nn.Module, oracle: nn.Module) -> tuple[float, str]:
    worst, where = 0.0, ""
    theirs = oracle.state_dict()
    for name, value in mine.state_dict().items():
        if value.is_floating_point():
            scale = theirs[name].abs().max().clamp_min(1e-3)
            diff = float((value - theirs[name]).abs().max() / scale)
            if diff > worst:
                worst, where = diff, name
    return worst, where


_LIBRARY_LOOP = ("the model was run by a function of resnet_edu (the trainer's `fit`, "
                 "`train_step` or its epoch loop), not by your loop: write the loop over the "
                 "batches yourself (the exercise is what those functions do).")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 20 else type(value).__name__


def _explain_epoch_error(error: BaseException, seen: _Watch) -> None:
    """NotYet saying, in the notebook's words, what an error raised in the student's epoch
    means."""
    text = str(error)
    if any(seen.library) or raised_in_library(error):
        raise NotYet(_LIBRARY_LOOP) from None
    if "does not require grad" in text or "does not have a grad_fn" in text:
        raise NotYet("loss.backward() found no graph to go back through: the loss was computed "
                     "while autograd was not recording (inside torch.no_grad() or "
                     "torch.inference_mode()), or from a detached tensor. In training the "
                     "forward pass and the loss must be recorded.") from None
    if isinstance(error, AttributeError) and "backward" in text:
        raise NotYet("backward() was called on something that is not the loss tensor "
                     f"({text}): .item() or float() turns the loss into a Python number, "
                     "which has no gradient. Call backward() on the tensor that `criterion` "
                     "returns.") from None
    if seen.losses and ("Long" in text or "Float" in text or "expected" in text.lower()
                        or "size" in text.lower() or "shape" in text.lower()):
        raise NotYet("the loss could not be computed from what you gave `criterion` "
                     f"({type(error).__name__}: {text}). It takes the model's scores for the "
                     "batch first, (B, 10) floats, then the labels, (B,) integers.") from None
    where = f" after {len(seen.lrs)} optimizer steps" if seen.lrs else ""
    raise NotYet(f"your loop stopped{where} with {type(error).__name__} ({text}). Each batch "
                 "of `loader` is a pair (x, y): x a (B, 3, 32, 32) float batch, y its (B,) "
                 "labels; the model maps x to (B, 10) scores.") from None


@exercise
def check_train_one_epoch(fn: Callable[..., object]) -> str:
    """Exercise 1: `fn(model, loader, optimizer, scheduler, criterion)` trains one epoch in
    place; the
    weights must be those of one epoch of `fit` from the same seed."""
    with one_thread():
        return _check_train_one_epoch(fn)


def _check_train_one_epoch(fn: Callable[..., object]) -> str:
    parts = epoch_parts()
    seen, handles = _watch(parts)
    try:
        with warnings.catch_warnings():  # the hints below say more than torch's warnings
            warnings.simplefilter("ignore")
            fn(parts.model, parts.loader, parts.optimizer, parts.scheduler, parts.criterion)
    except NotImplementedError as e:
        if not (seen.train_mode or seen.lrs) and not str(e):
            raise  # the cell's own `raise NotImplementedError`: not attempted yet
        _explain_epoch_error(e, seen)
    except Exception as e:
        _explain_epoch_error(e, seen)
    finally:
        for handle in handles:
            handle.remove()
    batches = len(parts.loader)
    if not seen.train_mode and not seen.lrs:
        raise NotImplementedError
    if any(seen.library):
        raise NotYet(_LIBRARY_LOOP)
    if any(seen.scheduler_args):
        raise NotYet(f"you called scheduler.step({', '.join(map(_short, seen.scheduler_args[0]))})"
                     ": the schedule you were given takes no argument (a LambdaLR reads one as "
                     "an epoch number and jumps there). Call scheduler.step() with nothing "
                     "between the brackets.")
    if not seen.lrs:
        raise NotYet("the loop never called optimizer.step(), so the weights did not change: "
                     "after loss.backward(), optimizer.step() applies the update (use the "
                     "optimizer you were given).")
    if not all(seen.train_mode):
        raise NotYet("the model ran in eval mode (it comes to you as an evaluation leaves "
                      "it): call model.train() before the loop, so that BatchNorm normalizes "
                      "each batch with its own statistics and updates its running averages.")
    if seen.losses == 0:
        raise NotYet("the loss was not computed with `criterion`, the loss you were given "
                     "(cross-entropy with the recipe's label smoothing, "
                     f"{parts.criterion.label_smoothing:g}, as printed above): "
                     "loss = criterion(model(x), y).")
    if len(seen.lrs) != batches:
        raise NotYet(f"{len(seen.lrs)} optimizer steps for {batches} batches: one step per "
                     "batch, inside the loop over the loader.")
    if any(seen.stale[1:]):
        k = seen.stale.index(True, 1) + 1
        raise NotYet(f"the gradients accumulate: when batch {k} called backward(), .grad still "
                     f"held the gradient of the batches before it. Call optimizer.zero_grad() "
                     "in every iteration, before loss.backward().")
    if any(seen.zero_at_step):
        if seen.events and seen.events[0] == "step":
            raise NotYet("optimizer.step() ran before loss.backward(), so each step applied "
                         "a gradient that was not yet there (or the previous batch's): step "
                         "uses what backward has just computed.")
        raise NotYet("at optimizer.step() the gradients were zero: zero_grad() between "
                     "backward() and step() throws the new gradient away. Call it before "
                     "loss.backward().")
    total = parts.config.epochs * batches
    want = [lr_at(i, total, parts.config) for i in range(batches)]

    def same(a: float, b: float) -> bool:
        return close(a, b, rel=1e-6, abs_=1e-9)

    if not all(same(a, b) for a, b in zip(seen.lrs, want, strict=True)):
        if all(close(a, seen.lrs[0], rel=1e-9) for a in seen.lrs):
            raise NotYet(f"the learning rate stayed at {seen.lrs[0]:.3g} for all {batches} "
                         f"steps, but the recipe's runs {', '.join(f'{w:.3g}' for w in want)}: "
                         "call scheduler.step() after every optimizer.step(), inside the loop "
                         "over batches (one-cycle is a per-step schedule; stepping it once "
                         "per epoch keeps one rate for the whole epoch).")
        if all(same(a, b) for a, b in zip(seen.lrs[:-1], want[1:], strict=True)):
            raise NotYet("every step used the next step's learning rate: scheduler.step() "
                         "belongs after optimizer.step(), not before it.")
        i = next(i for i, (a, b) in enumerate(zip(seen.lrs, want, strict=True)) if not same(a, b))
        raise NotYet(f"step {i} used the learning rate {seen.lrs[i]:.4g}, the recipe's is "
                     f"{want[i]:.4g}: let `scheduler` set the rate (scheduler.step() once per "
                     "batch, after optimizer.step()).")
    worst, where = _largest_difference(parts.model, fit_one_epoch(parts.config))
    if worst > 1e-4:
        raise NotYet(f"the learning rates, modes and gradients look right, but after the "
                     f"epoch your weights differ from fit's (by {worst:.2g} of its scale in "
                     f"{where}): use each batch (x, y) of the loader once, in order, with "
                     "loss = criterion(model(x), y).")
    return (f"{batches} steps at the recipe's learning rates; your weights match one epoch of "
            "`fit` from the same seed.")


@exercise
def check_loss_floor_prediction(guess: object, label_smoothing: float, classes: int = 10) -> str:
    """Prediction: the lowest training loss a model can reach against label-smoothed targets."""
    eps = label_smoothing
    true, other = 1 - eps + eps / classes, eps / classes
    what = "the lowest training loss against the smoothed targets"
    require_prediction(guess, what)
    if isinstance(guess, bool) or not isinstance(guess, (int, float)):
        raise NotYet(f"your prediction of {what} should be a number (in nats), got {guess!r}")
    floor = smoothed_loss_floor(eps, classes)
    probabilities = {1 - eps: "1 - eps", true: "1 - eps + eps/K"}
    for value, name in probabilities.items():
        if close(guess, value, rel=0.01):
            raise NotYet(f"{guess:g} is {name}, a probability: the share the smoothed target "
                         "puts on the true class. The question asks for a loss, a "
                         "cross-entropy in nats: what is the cross-entropy of the best "
                         "possible prediction against that target?")
    if close(guess, -math.log(true), rel=0.01):
        raise NotYet(f"{guess:.3g} is -log({true:g}), the true class's term alone. Against a "
                     "smoothed target every class has a term: cross-entropy is -sum over all "
                     f"{classes} classes of q log p.")
    why = (f"The smoothed target puts {true:g} on the true class and {other:g} on each of the "
           f"other {classes - 1}; cross-entropy against a target q is smallest when the "
           "predicted probabilities equal q, and that smallest value is q's entropy, "
           "-sum q log q, not 0.")
    if close(guess, floor, rel=0.05):
        return (f"you predicted {guess:.3g} nats; the floor, computed from the targets, is "
                f"{floor:.3g}. {why}")
    side = "high" if guess > floor else "low"
    raise NotYet(f"you predicted {guess:.3g} nats, but the floor, computed from the targets, "
                 f"is {floor:.3g}: too {side} by more than 5 %. {why}")
