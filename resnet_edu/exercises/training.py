"""Checks for notebook 04 (training ResNet-18 on CIFAR-10). The trainer's rules, and `fit`
itself, are the oracle."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..augment import DeviceLoader
from ..data import load_sample
from ..live import smoothed_loss_floor
from ..recipe import TrainConfig, build_model, lr_at, param_groups, preset, train_resolution
from ..train import fit
from . import NotYet, close, exercise, one_thread, require_prediction


def _small_model() -> nn.Module:
    from ..models import resnet18_cifar

    return resnet18_cifar(width=4)


@exercise
def check_split_parameters(fn: Callable[[nn.Module], tuple[list, list]]) -> str:
    """Exercise 2: `fn(model)` -> (decayed, not_decayed) parameter lists, as `param_groups`."""
    model = _small_model()
    result = fn(model)
    if result is None:
        raise NotImplementedError
    if not (isinstance(result, tuple) and len(result) == 2):
        raise NotYet(f"return a pair (decayed, not_decayed), got {type(result).__name__}")
    decay, no_decay = (list(r) for r in result)
    expected_decay, expected_no = (g["params"] for g in param_groups(model, 1.0))
    names = {id(p): n for n, p in model.named_parameters()}
    if any(not isinstance(p, nn.Parameter) for p in decay + no_decay):
        raise NotYet("both lists should hold the model's parameters (nn.Parameter objects)")
    given = {id(p) for p in decay} | {id(p) for p in no_decay}
    missing = [names[id(p)] for p in model.parameters() if id(p) not in given]
    if missing:
        raise NotYet(f"{len(missing)} parameters are in neither list, e.g. {missing[0]}: "
                     "every parameter must go somewhere")
    wrong = [names[id(p)] for p in decay if id(p) not in {id(q) for q in expected_decay}]
    if wrong:
        raise NotYet(f"{wrong[0]} (shape {tuple(dict(model.named_parameters())[wrong[0]].shape)}) "
                     "should not be decayed: BN scales/shifts and biases are 1-D")
    wrong = [names[id(p)] for p in no_decay if id(p) not in {id(q) for q in expected_no}]
    if wrong:
        raise NotYet(f"{wrong[0]} is a conv or linear weight: it should be decayed")
    return (f"{len(decay)} weight tensors decayed, {len(no_decay)} BN/bias tensors not, "
            "as the trainer does.")


def _names_used(fn: Callable) -> set[str]:
    """The global and enclosing names `fn`'s code reads, with its nested functions'."""
    names, stack = set(), [getattr(fn, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        names.update(code.co_names, code.co_freevars)
        stack.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    return names


@exercise
def check_one_cycle(fn: Callable[[int, int, float, float], float]) -> str:
    """Exercise 3: `fn(step, total_steps, peak_lr, warmup_fraction)` -> the one-cycle lr,
    written out (a function that calls the library's `lr_at` is refused)."""
    if "lr_at" in _names_used(fn):
        raise NotYet("your function calls lr_at, the library's own schedule: the exercise is "
                     "to write the rule yourself, from the description above.")
    cases = [(100, 0.4, 0.2), (37, 0.1, 0.25), (10, 1.0, 0.0), (250, 0.05, 0.5)]
    for total, peak, warmup in cases:
        config = TrainConfig(lr=peak, warmup=warmup, schedule="onecycle")
        for step in range(total):
            want = lr_at(step, total, config)
            got = fn(step, total, peak, warmup)
            if not isinstance(got, (int, float)) and not torch.is_tensor(got):
                raise NotYet(f"return a number, got {type(got).__name__}")
            if not close(float(got), want, rel=1e-6, abs_=1e-9):
                phase = "warm-up" if step < round(warmup * total) else "decay"
                raise NotYet(f"at step {step} of {total} (peak {peak}, warm-up fraction "
                             f"{warmup}, in the {phase}) the lr should be {want:.5g}, "
                             f"got {float(got):.5g}")
    return "your schedule matches the trainer's one-cycle rule at every step."


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
    data = load_sample()
    train_set = data.train
    if config.train_subset is not None:
        train_set = train_set.subset(slice(0, config.train_subset))
    torch.manual_seed(config.seed)
    model = build_model(config).eval()
    loader = DeviceLoader(train_set, config.batch_size, train=True, device="cpu",
                          padding=config.padding, flip=config.flip, cutout_size=config.cutout,
                          seed=config.seed, channels_last=False)
    loader.set_epoch(0)
    loader.size = train_resolution(0, config)
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=config.nesterov)
    total = config.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at(min(step, total - 1), total, config) / config.lr)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    return EpochParts(model, loader, optimizer, scheduler, criterion, config)


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

    handles = [
        parts.model.register_forward_pre_hook(lambda m, a: seen.train_mode.append(m.training)),
        parts.criterion.register_forward_pre_hook(
            lambda m, a: setattr(seen, "losses", seen.losses + 1)),
        first.register_hook(lambda g: seen.stale.append(not grad_is_zero())),
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
    finally:
        for handle in handles:
            handle.remove()
    batches = len(parts.loader)
    if not seen.train_mode and not seen.lrs:
        raise NotImplementedError
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
    why = (f"The smoothed target puts {true:g} on the true class and {other:g} on each of the "
           f"other {classes - 1}; cross-entropy against a target q is smallest when the "
           "predicted probabilities equal q, and that smallest value is q's entropy, "
           "-sum q log q, not 0.")
    if close(guess, floor, rel=0.1):
        return (f"you predicted {guess:.3g} nats; the floor, computed from the targets, is "
                f"{floor:.3g}. {why}")
    side = "high" if guess > floor else "low"
    raise NotYet(f"you predicted {guess:.3g} nats, but the floor, computed from the targets, "
                 f"is {floor:.3g}: too {side} by more than 10%. {why}")
