"""Training a classifier on CIFAR-10: `fit` runs a recipe, with checkpoints and resuming.

    from resnet_edu.data import load_cifar10
    from resnet_edu.evaluation import evaluate
    from resnet_edu.recipe import build_model, choose_preset, preset
    from resnet_edu.train import fit

    config = preset(choose_preset())       # "gpu" on CUDA, "cpu" otherwise, "smoke" in CI
    data = load_cifar10()                  # train / val / test ImageSets
    model = build_model(config)            # ResNet-18 (CIFAR stem) at config.width
    history = fit(model, data, config, out_dir="runs/r18")   # resumes if interrupted
    evaluate(model, data.test, tta=True)   # {'loss': ..., 'acc': ..., 'acc_tta': ...}

`fit` works for any `nn.Module` that maps (B, 3, H, W) images to (B, 10) logits. Its
recipe is the `TrainConfig` (`resnet_edu.recipe`): SGD with Nesterov momentum, a warm-up
then decay learning-rate schedule (one-cycle, Smith & Topin 2017, or cosine), label
smoothing (Szegedy et al. 2016), weight decay only on conv/linear weights (not on BN
parameters or biases), the standard crop + flip augmentation of He et al. 2015 (Sec. 4.2)
done on the device, optional cutout, optional progressive resizing (small crops early, full
size at the end), mixed precision and channels_last on a GPU, optional `torch.compile`.

Honest evaluation: `fit` reports the validation split each epoch (for choosing settings);
pass `eval_splits=("val", "test")` only to draw the final figure or for a benchmark.
A checkpoint is written atomically after every epoch; `fit` on the same `out_dir` resumes
from it and produces exactly the weights an uninterrupted run would (the augmentation of
each epoch depends only on the seed and the epoch number). Checkpoints hold only tensors and
plain Python values, so `torch.load(path, weights_only=True)` reads them.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import budget
from .augment import DeviceLoader
from .budget import Planner, measure_speed
from .checkpoints import lock_out_dir, prepare_out_dir, remove_stale_temp_files
from .checks import check_device
from .data import Cifar10, ImageSet
from .evaluation import evaluate
from .precision import autocast, needs_grad_scaler, resolve_amp
from .recipe import TrainConfig, lr_at, param_groups, train_resolution
from .runs import START_OVER, History, RunState
from .runtime import channels_last_trains_safely, default_device, live_widgets

DIVERGENCE_FACTOR = 10  # training stops when the loss exceeds 10x its starting value
DIVERGENCE_CHECK_EVERY = 10  # steps between checks (each check waits for the device)
LIVE_EVERY_S = 5.0  # a notebook's progress bar and epoch lines: at most one update this often


# --- evaluation, as fit does it ------------------------------------------------------------

def eval_settings(config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The keyword arguments with which `fit` evaluates a model trained with `config`: batch
    size, memory format and precision. Pass them to `evaluate` and `predict` so that a figure
    computed after training is computed exactly as the per-epoch figures were."""
    return {"device": device, "batch_size": config.eval_batch_size, "amp": config.amp,
            "channels_last": config.channels_last and channels_last_trains_safely(device)}


# --- fit ----------------------------------------------------------------------------------

def _progress_bar(total: int, enabled: bool):
    """One bar for the whole run. In a notebook every refresh is a message to the front end,
    and a client that reads them only after the cell (nbval) drops what exceeds ZeroMQ's
    high-water mark (1,000 messages), the cell's end included: so one bar, not one per epoch,
    refreshed at most every LIVE_EVERY_S seconds there."""
    if live_widgets():
        from tqdm.auto import tqdm
    else:  # terminal, or a notebook run without a front end (nbval, nbconvert): plain text
        from tqdm.std import tqdm
    every = LIVE_EVERY_S if live_widgets() else 0.5 if sys.stderr.isatty() else 30
    return tqdm(total=total, disable=not enabled, leave=False, mininterval=every,
                dynamic_ncols=True)


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or grew far above its starting value: the learning rate is
    too high for this model and batch size."""


def fit(model: nn.Module, data: Cifar10, config: TrainConfig, *,
        out_dir: str | Path | None = None, device: torch.device | str | None = None,
        resume: bool = True, eval_splits: Sequence[str] = ("val",), progress: bool = True,
        verbose: bool = True, budget_used_s: float = 0.0,
        callbacks: Iterable[Callable[[History], None]] = (),
        eval_sets: Mapping[str, ImageSet] | None = None) -> History:
    """Train `model` on `data.train` with the recipe `config`; return the per-epoch history.

    After each epoch: evaluate the `eval_splits` ('val', 'test', 'train') and the named
    `eval_sets` (e.g. a fixed subset of the training images, in eval mode), append a record,
    call each callback with the history, and (if `out_dir`) write `history.json` and
    `checkpoint.pt`. With `resume` and a checkpoint in `out_dir`, training continues from it
    (a finished run returns at once); a checkpoint of another recipe or other data is
    refused. `model` is trained in place and left on `device`.

    With `config.budget_s`, the epochs are planned to end within that many seconds (see
    `resnet_edu.budget`); `budget_used_s` is the part of it the caller spends outside `fit`
    (loading the data before, a final evaluation after).

    Checked before any work: the device exists, `out_dir` is a writable folder that no other
    training uses (it holds a lock while training), the evaluated splits are not empty.
    A loss that becomes non-finite or exceeds 10x its starting value raises
    `TrainingDiverged`; the last checkpoint written stays as it was.
    """
    for split in eval_splits:
        if split not in ("train", "val", "test"):
            raise ValueError(f"eval_splits must name 'train', 'val' or 'test', got {split!r}")
        if len(getattr(data, split)) == 0:
            raise ValueError(f"eval_splits names {split!r}, but data.{split} has no images: "
                             "leave it out of eval_splits")
    device = default_device() if device is None else check_device(device)
    evals = {split: getattr(data, split) for split in eval_splits}
    for name, images in (eval_sets or {}).items():
        if name in evals or not isinstance(images, ImageSet) or len(images) == 0:
            raise ValueError(f"eval_sets must map new names to non-empty ImageSets, got "
                             f"{name!r}: {type(images).__name__}")
        evals[name] = images
    run = dict(device=device, resume=resume, eval_splits=evals, progress=progress,
               verbose=verbose, callbacks=callbacks, budget_used_s=budget_used_s)
    if out_dir is None:
        return _fit(model, data, config, out_dir=None, **run)
    out = prepare_out_dir(out_dir)
    with lock_out_dir(out):
        remove_stale_temp_files(out)
        return _fit(model, data, config, out_dir=out, **run)


# --- the parts of training, built once --------------------------------------------------

@dataclass
class Parts:
    """What training needs besides the model's weights and the data, built from the recipe by
    `make_parts`: for `fit`, for the budget probe and for notebook 04's exercise."""

    model: nn.Module  # on the device, in the recipe's memory format
    forward: nn.Module  # the model, or its torch.compile'd wrapper
    loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype (None: float32)


def training_images(data: Cifar10, config: TrainConfig) -> ImageSet:
    """The images `config` trains on: `data.train`, or its first `train_subset`."""
    if config.train_subset is None:
        return data.train
    return data.train.subset(slice(0, config.train_subset))


def make_parts(model: nn.Module, train_set: ImageSet, config: TrainConfig,
               device: torch.device | str) -> Parts:
    """Move `model` to `device` and build its optimizer (SGD, weight decay on conv and linear
    weights only), loss scaler, loss (label-smoothed cross-entropy) and on-device loader."""
    device = torch.device(device)
    dtype = resolve_amp(config.amp, device)
    channels_last = config.channels_last and channels_last_trains_safely(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay,
                                             config.decay_norm_and_bias), lr=config.lr,
                                momentum=config.momentum, nesterov=config.nesterov)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(dtype))  # fp16 is CUDA-only
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    loader = DeviceLoader(train_set, config.batch_size, train=True, device=device,
                          padding=config.padding, flip=config.flip, cutout_size=config.cutout,
                          seed=config.seed, channels_last=channels_last)
    if len(loader) == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the training set "
                         f"({len(train_set)} images)")
    forward = torch.compile(model) if config.compile else model
    return Parts(model, forward, loader, optimizer, scaler, criterion, device, dtype)


def lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int,
                start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The one way `lr_at` is applied: a `LambdaLR` whose i-th step runs at
    `lr_at(start_step + i, total_steps, config)` (call `scheduler.step()` after each
    `optimizer.step()`). A resumed or re-planned run makes a new one from where it is."""
    def factor(i: int) -> float:
        return lr_at(min(start_step + i, total_steps - 1), total_steps, config) / config.lr

    for group in optimizer.param_groups:  # the peak rate, whatever a scheduler before set
        group["initial_lr"] = config.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_step(forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, criterion: nn.Module, x: torch.Tensor,
               y: torch.Tensor, device: torch.device,
               dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the batch (x, y): forward under autocast, loss, backward, step.
    Returns the loss and the logits, both still attached to nothing (detached)."""
    with autocast(device, dtype):
        logits = forward(x)  # (B, classes)
        loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # the scaler is a no-op except for fp16 on CUDA
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


class DivergenceGuard:
    """Stops training when the loss becomes non-finite or exceeds DIVERGENCE_FACTOR times its
    start (the first step's loss, at least ln(classes), a guess's loss)."""

    def __init__(self, config: TrainConfig, ckpt_path: Path | None,
                 start: float | None = None) -> None:
        self.config, self.ckpt_path, self.start, self.epoch = config, ckpt_path, start, 0

    def __call__(self, peak: float, loss: torch.Tensor, logits: torch.Tensor) -> None:
        if self.start is None:
            self.start = max(loss.item(), math.log(logits.shape[1]))
        _check_divergence(peak, self.start, self.epoch, self.config, self.ckpt_path)


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, criterion: nn.Module, *,
                    scaler: torch.amp.GradScaler | None = None, dtype: torch.dtype | None = None,
                    steps: int | None = None, guard: Callable | None = None,
                    timer: Callable[[int], None] | None = None, bar: Any = None) -> dict:
    """One epoch of SGD in place: notebook 04's Exercise 1, with the extras of `fit`: mixed
    precision (`dtype`, `scaler`), an epoch cut short after `steps`, and every
    DIVERGENCE_CHECK_EVERY steps (where it waits for the device anyway) the divergence
    `guard(peak_loss, loss, logits)` and `timer(steps_done)`. Returns the epoch's last
    learning rate, mean training loss and accuracy, and the number of images seen."""
    model.train()
    device = next(model.parameters()).device
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
    steps = len(loader) if steps is None else min(steps, len(loader))
    loss_sum, correct, peak = (torch.zeros((), device=device) for _ in range(3))
    seen, lr = 0, optimizer.param_groups[0]["lr"]
    for i, (x, y) in enumerate(itertools.islice(loader, steps)):  # x: (B, 3, S, S), y: (B,)
        lr = optimizer.param_groups[0]["lr"]
        loss, logits = train_step(model, optimizer, scaler, criterion, x, y, device, dtype)
        scheduler.step()  # the next step's learning rate
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        peak = torch.maximum(peak, loss)  # the epoch's largest loss (nan if any is nan)
        if i % DIVERGENCE_CHECK_EVERY == 0 or i == steps - 1:
            top = peak.item()  # waits for the device
            if guard is not None:
                guard(top, loss, logits)
            if timer is not None:
                timer(i + 1)
        if bar is not None:
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3f}", refresh=False)
    return {"lr": lr, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
            "seen": seen}


def _fit(model: nn.Module, data: Cifar10, config: TrainConfig, *, out_dir: Path | None,
         device: torch.device, resume: bool, eval_splits: Mapping[str, ImageSet], progress: bool,
         verbose: bool, callbacks: Iterable[Callable[[History], None]],
         budget_used_s: float) -> History:
    clock_start = budget.clock() - budget_used_s  # the command's start, on the budget's clock
    train_set = training_images(data, config)
    parts = make_parts(model, train_set, config, device)
    state = RunState.start(config, parts, data, out_dir, resume, verbose)
    steps = len(parts.loader)
    planner = None
    if config.budget_s is not None and state.epoch == 0:
        planner = _planner(model, data, train_set, config, parts, eval_splits, clock_start)
        state.adopt(planner.plan(done_epochs=0))
        if verbose:
            print(f"Time budget: {state.history.config['plan']}", flush=True)
    scheduler = lr_schedule(parts.optimizer, state.run, state.total_steps, state.epoch * steps)
    guard = DivergenceGuard(config, state.ckpt_path, state.start_loss)
    bar = _progress_bar(state.total_steps - state.epoch * steps, progress and
                        state.epoch < state.run.epochs)
    last_line = -math.inf
    while state.epoch < state.run.epochs:
        bar.set_description(f"epoch {state.epoch + 1}/{state.run.epochs}", refresh=False)
        record = _epoch(parts, state, scheduler, guard, bar, data, eval_splits, planner)
        state.history.epochs.append(record)
        state.epoch += 1
        if verbose and (time.perf_counter() - last_line >= LIVE_EVERY_S
                        or state.epoch in (1, state.run.epochs)):
            last_line = time.perf_counter()
            _print_epoch(record, state.run.epochs)
        state.save(parts, guard)
        for callback in callbacks:
            callback(state.history)
        if planner is not None:
            scheduler = _replan(planner, state, parts, scheduler, guard, bar, verbose)
    bar.close()
    return state.history


def _replan(planner: Planner, state: RunState, parts: Parts, scheduler: Any,
            guard: DivergenceGuard, bar: Any, verbose: bool) -> Any:
    """After an epoch: the planner's correction, if any, adopted; the schedule that follows."""
    new = planner.after_epoch(state.epoch)
    if new is None or new[0].steps == state.total_steps or state.epoch >= state.run.epochs:
        return scheduler
    plan, why = new
    state.adopt(plan, **{f"replanned_after_epoch_{state.epoch}": why})
    state.save(parts, guard)  # the checkpoint holds the new plan
    bar.total = state.total_steps
    if verbose:
        print(f"Re-planned after epoch {state.epoch} ({why}): {plan.describe()}", flush=True)
    return lr_schedule(parts.optimizer, state.run, state.total_steps,
                       state.epoch * len(parts.loader))


def _epoch(parts: Parts, state: RunState, scheduler: torch.optim.lr_scheduler.LRScheduler,
           guard: DivergenceGuard, bar: Any, data: Cifar10, eval_splits: Mapping[str, ImageSet],
           planner: Planner | None) -> dict[str, float]:
    """Train one epoch of the run, evaluate the named image sets, and return its record."""
    t0 = time.perf_counter()
    parts.loader.set_epoch(state.epoch)
    parts.loader.size = train_resolution(state.epoch, state.run)
    guard.epoch = state.epoch
    timer = planner.timer(parts.loader.size) if planner is not None else None
    stats = train_one_epoch(parts.forward, parts.loader, parts.optimizer, scheduler,
                            parts.criterion, scaler=parts.scaler, dtype=parts.dtype,
                            steps=state.epoch_steps(len(parts.loader)), guard=guard,
                            timer=timer, bar=bar)
    if parts.device.type == "cuda":
        torch.cuda.synchronize(parts.device)
    epoch_time = time.perf_counter() - t0
    prior = state.history.last
    record = {"epoch": state.epoch + 1, "lr": stats["lr"], "resolution": parts.loader.size,
              "train_loss": stats["train_loss"], "train_acc": stats["train_acc"]}
    for split, images in eval_splits.items():
        result = evaluate(parts.model, images, tta=state.config.tta,
                          **eval_settings(state.config, parts.device))
        record.update({f"{split}_{k}": v for k, v in result.items()})
    parts.model.train()
    record.update({"epoch_time_s": epoch_time,
                   "train_time_s": prior.get("train_time_s", 0.0) + epoch_time,
                   "wall_time_s": prior.get("wall_time_s", 0.0) + time.perf_counter() - t0,
                   "images_per_s": stats["seen"] / epoch_time})
    return record


def _print_epoch(record: dict[str, float], epochs: int) -> None:
    shown = {k: v for k, v in record.items() if k.endswith(("_loss", "_acc", "_tta"))}
    print(f"epoch {record['epoch']:>2}/{epochs}  "
          + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
          + f"  {record['epoch_time_s']:.0f} s", flush=True)


def _planner(model: nn.Module, data: Cifar10, train_set: ImageSet, config: TrainConfig,
             parts: Parts, eval_splits: Mapping[str, ImageSet], clock_start: float) -> Planner:
    """Measure this machine on a throwaway copy of the model, built as the run's parts are,
    and return the planner of the run's epochs."""
    probe = make_parts(copy.deepcopy(model), train_set, config, parts.device)
    probe.optimizer.param_groups[0]["lr"] = probe.optimizer.param_groups[1]["lr"] = 1e-3

    def batches(size: int):
        probe.loader.size = size
        return iter(probe.loader)

    eval_set = next(iter(eval_splits.values()), train_set)
    eval_images = sum(len(images) for images in eval_splits.values())
    speed = measure_speed(
        lambda x, y: train_step(probe.forward, probe.optimizer, probe.scaler, probe.criterion,
                                x, y, probe.device, probe.dtype),
        batches, lambda batch: evaluate(model, batch, tta=config.tta,
                                        **eval_settings(config, parts.device)),
        eval_set.subset(slice(0, min(len(eval_set), config.eval_batch_size))),
        min_resolution=config.min_resolution, device=parts.device)
    return Planner(config.budget_s, speed, steps_per_epoch=len(parts.loader),
                   batch_size=config.batch_size, train_images=len(train_set),
                   eval_images=eval_images, start=clock_start,
                   resolution=lambda e, n: train_resolution(
                       e, dataclasses.replace(config, epochs=n)))


def _check_divergence(loss: float, start: float, epoch: int, config: TrainConfig,
                      ckpt_path: Path | None) -> None:
    if math.isfinite(loss) and loss <= DIVERGENCE_FACTOR * start:
        return
    if ckpt_path is not None and epoch > 0:
        kept = f"the checkpoint of epoch {epoch} in {ckpt_path} is kept as it was"
    else:
        kept = "no checkpoint was written"
    raise TrainingDiverged(
        f"training diverged in epoch {epoch + 1}: the loss reached {loss:.3g} (it started at "
        f"{start:.3g}); the learning rate is too high: lower lr (now {config.lr:g}, try "
        f"{config.lr / 10:g}) and {START_OVER}; {kept}")

