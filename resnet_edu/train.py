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

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .augment import DeviceLoader
from .budget import REPLAN_DRIFT, Plan, Speed, epoch_seconds, measure_speed, plan_epochs
from .checkpoints import (
    CHECKPOINT,
    HISTORY,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    load_weights,
    lock_out_dir,
    prepare_out_dir,
    remove_stale_temp_files,
    save_checkpoint,
)
from .checks import check_device
from .data import Cifar10, fingerprint
from .evaluation import evaluate
from .recipe import (
    TrainConfig,
    autocast,
    lr_at,
    needs_grad_scaler,
    param_groups,
    resolve_amp,
    train_resolution,
)
from .runtime import channels_last_trains_safely, default_device, device_name, live_widgets

DIVERGENCE_FACTOR = 10  # training stops when the loss exceeds 10x its starting value
DIVERGENCE_CHECK_EVERY = 10  # steps between checks (each check waits for the device)


# --- history and checkpoints ---------------------------------------------------------------

@dataclass
class History:
    """Per-epoch metrics of a run (one dict per epoch) plus the config and hardware."""

    config: dict[str, Any]
    hardware: str = ""
    epochs: list[dict[str, float]] = field(default_factory=list)

    def column(self, key: str) -> list[float]:
        """One metric over the epochs, e.g. `history.column('val_acc')`."""
        return [e[key] for e in self.epochs if key in e]

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}

    def images_per_s(self) -> float:
        """Training throughput of the run: all images trained on, divided by the total
        training time (evaluation excluded). The one definition of "images/s" for a run."""
        seen = sum(e["images_per_s"] * e["epoch_time_s"] for e in self.epochs)
        return seen / self.last["train_time_s"] if self.epochs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "hardware": self.hardware, "epochs": self.epochs}

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda f: f.write(text.encode()))

    @classmethod
    def load(cls, path: str | Path) -> History:
        d = json.loads(Path(path).read_text())
        return cls(d["config"], d.get("hardware", ""), d["epochs"])


# --- evaluation, as fit does it ------------------------------------------------------------

def eval_settings(config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The keyword arguments with which `fit` evaluates a model trained with `config`: batch
    size, memory format and precision. Pass them to `evaluate` and `predict` so that a figure
    computed after training is computed exactly as the per-epoch figures were."""
    return {"device": device, "batch_size": config.eval_batch_size, "amp": config.amp,
            "channels_last": config.channels_last and channels_last_trains_safely(device)}


# --- fit ----------------------------------------------------------------------------------

def _progress_bar(total: int, desc: str, enabled: bool):
    if live_widgets():
        from tqdm.auto import tqdm
    else:  # terminal, or a notebook run without a front end (nbval, nbconvert): plain text
        from tqdm.std import tqdm
    interactive = live_widgets() or sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False,
                mininterval=0.5 if interactive else 30, dynamic_ncols=True)


_START_OVER = "start over in another output folder, or with --no-resume (resume=False in Python)"


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or grew far above its starting value: the learning rate is
    too high for this model and batch size."""


def data_identity(data: Cifar10) -> dict[str, Any]:
    """What a checkpoint records about its data: where it was read and a fingerprint."""
    return {"source": data.source, "train": len(data.train), "val": len(data.val),
            "fingerprint": fingerprint(data)}


def _check_resume(state: dict[str, Any], config: TrainConfig, data: dict[str, Any],
                  path: Path) -> None:
    saved, now = state["config"], config.to_dict()
    differ = sorted(k for k in now if saved.get(k) != now[k])
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differ)
        raise CheckpointError(f"{path} was written with a different recipe ({detail}); "
                              f"resuming would not reproduce the run: {_START_OVER}")
    before = state.get("data")  # checkpoints written before data identities had none
    if before is not None and before.get("fingerprint") != data["fingerprint"]:
        raise CheckpointError(
            f"{path} was trained on other data ({before.get('train')} training and "
            f"{before.get('val')} validation images from {before.get('source')}; now "
            f"{data['train']} and {data['val']} from {data['source']}); resuming would mix "
            f"the two in one run: use the same data as before, or {_START_OVER}")


def fit(model: nn.Module, data: Cifar10, config: TrainConfig, *,
        out_dir: str | Path | None = None, device: torch.device | str | None = None,
        resume: bool = True, eval_splits: Sequence[str] = ("val",), progress: bool = True,
        verbose: bool = True, budget_used_s: float = 0.0,
        callbacks: Iterable[Callable[[History], None]] = ()) -> History:
    """Train `model` on `data.train` with the recipe `config`; return the per-epoch history.

    After each epoch: evaluate the `eval_splits` ('val', 'test', 'train'), append a record,
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
    run = dict(device=device, resume=resume, eval_splits=eval_splits, progress=progress,
               verbose=verbose, callbacks=callbacks, budget_used_s=budget_used_s)
    if out_dir is None:
        return _fit(model, data, config, out_dir=None, **run)
    out = prepare_out_dir(out_dir)
    with lock_out_dir(out):
        remove_stale_temp_files(out)
        return _fit(model, data, config, out_dir=out, **run)


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


def _fit(model: nn.Module, data: Cifar10, config: TrainConfig, *, out_dir: Path | None,
         device: torch.device, resume: bool, eval_splits: Sequence[str], progress: bool,
         verbose: bool, callbacks: Iterable[Callable[[History], None]],
         budget_used_s: float) -> History:
    dtype = resolve_amp(config.amp, device)
    channels_last = config.channels_last and channels_last_trains_safely(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=config.nesterov)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(dtype))  # fp16 is CUDA-only
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    forward = torch.compile(model) if config.compile else model

    train_set = data.train
    if config.train_subset is not None:
        train_set = train_set.subset(slice(0, config.train_subset))
    loader = DeviceLoader(train_set, config.batch_size, train=True, device=device,
                          padding=config.padding, flip=config.flip, cutout_size=config.cutout,
                          seed=config.seed, channels_last=channels_last)
    if len(loader) == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the training set "
                         f"({len(train_set)} images)")
    fit_start = time.perf_counter() - budget_used_s  # the budget's clock
    run = config  # the recipe as trained: with a time budget, its epochs are planned here
    total_steps = run.epochs * len(loader)
    history = History(run.to_dict(), f"{device_name(device)}")
    start_epoch = 0
    start_loss: float | None = None  # the first step's loss: the divergence guard's reference
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    identity = data_identity(data) if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        _check_resume(state, config, identity, ckpt_path)
        load_weights(model, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if config.budget_s is not None:  # finish the schedule planned when the run began
            run = dataclasses.replace(config, epochs=int(state["planned_epochs"]))
            total_steps = run.epochs * len(loader)
        history = History(run.to_dict(), resumed_hardware(state, history.hardware),
                          list(state["history"]))
        start_epoch = int(state["epoch"])
        start_loss = state.get("start_loss")
        if start_epoch >= run.epochs:  # finished: the loaded run's own hardware only
            history.hardware = state.get("hardware", NOT_RECORDED)
        if start_loss is None and history.epochs:  # written before the guard existed
            start_loss = history.epochs[0]["train_loss"]
        if config.budget_s is not None:  # the plan as the run printed it, from its record
            try:
                plan = History.load(Path(out_dir) / HISTORY).config.get("plan")
            except (OSError, ValueError, KeyError):
                plan = None
            if plan:
                history.config["plan"] = plan
        if verbose and start_epoch < run.epochs:
            print(f"Resuming from {ckpt_path} after epoch {start_epoch}/{run.epochs}")
        elif verbose:
            planned = f"; its time budget planned {history.config['plan']}" if (
                "plan" in history.config) else ""
            print(f"The run in {ckpt_path} is finished ({start_epoch} epochs{planned}): "
                  f"loaded it. To train again, {_START_OVER}.")
    prior = history.last
    train_time, wall_time = prior.get("train_time_s", 0.0), prior.get("wall_time_s", 0.0)
    eval_images = sum(len(getattr(data, split)) for split in eval_splits)
    speed = None
    if config.budget_s is not None and start_epoch == 0:
        probe_scaler = torch.amp.GradScaler("cuda", enabled=scaler.is_enabled())  # not the run's
        speed = measure_speed(
            model, train_set, getattr(data, eval_splits[0]) if eval_splits else train_set,
            batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
            min_resolution=config.min_resolution, device=device, channels_last=channels_last,
            train_step=lambda m, opt, x, y: train_step(m, opt, probe_scaler, criterion, x, y,
                                                       device, dtype),
            evaluate_batch=lambda m, batch: evaluate(m, batch, tta=config.tta,
                                                     **eval_settings(config, device)))
        plan = _plan(config, speed, len(loader), len(train_set), eval_images,
                     spent_s=time.perf_counter() - fit_start)
        run = dataclasses.replace(config, epochs=plan.epochs)
        total_steps = run.epochs * len(loader)
        history.config = {**run.to_dict(), "plan": plan.describe()}
        if verbose:
            print(f"Time budget: {plan.describe()}", flush=True)

    model.train()
    epoch = start_epoch
    while epoch < run.epochs:
        t0 = time.perf_counter()
        loader.set_epoch(epoch)
        loader.size = train_resolution(epoch, run)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        peak = torch.zeros((), device=device)  # the epoch's largest loss (nan if any is nan)
        seen = 0
        bar = _progress_bar(len(loader), f"epoch {epoch + 1}/{run.epochs}", progress)
        for i, (x, y) in enumerate(loader):  # x: (B, 3, S, S) float, y: (B,)
            lr = lr_at(epoch * len(loader) + i, total_steps, run)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, logits = train_step(forward, optimizer, scaler, criterion, x, y, device, dtype)
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            peak = torch.maximum(peak, loss)
            if start_loss is None:  # the reference: at least ln(classes), a guess's loss
                start_loss = max(loss.item(), math.log(logits.shape[1]))
            if i % DIVERGENCE_CHECK_EVERY == 0 or i == len(loader) - 1:
                _check_divergence(peak.item(), start_loss, epoch, config, ckpt_path)
            bar.update(1)
            if i % 20 == 0 and bar.disable is False:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3f}")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        record: dict[str, float] = {
            "epoch": epoch + 1, "lr": lr, "resolution": loader.size,
            "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
        }
        for split in eval_splits:
            result = evaluate(model, getattr(data, split), tta=config.tta,
                              **eval_settings(config, device))
            record.update({f"{split}_{k}": v for k, v in result.items()})
        model.train()
        wall_time += time.perf_counter() - t0
        record.update({"epoch_time_s": epoch_time, "train_time_s": train_time,
                       "wall_time_s": wall_time, "images_per_s": seen / epoch_time})
        history.epochs.append(record)
        if verbose:
            shown = {k: v for k, v in record.items() if k.endswith(("_loss", "_acc", "_tta"))}
            print(f"epoch {epoch + 1:>2}/{run.epochs}  "
                  + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
                  + f"  {epoch_time:.0f} s", flush=True)
        if speed is not None and epoch == 0:  # the first epoch against the plan: re-plan once
            planned = epoch_seconds(speed, loader.size, len(loader), eval_images)
            drift = (time.perf_counter() - t0) / planned
            if abs(drift - 1) > REPLAN_DRIFT:
                plan = _plan(config, speed.scaled(drift), len(loader), len(train_set),
                             eval_images, spent_s=time.perf_counter() - fit_start,
                             done_epochs=1)
                if plan.epochs != run.epochs:
                    run = dataclasses.replace(config, epochs=plan.epochs)
                    total_steps = run.epochs * len(loader)
                history.config = {**run.to_dict(), "plan": plan.describe(),
                                  "replanned_after_epoch_1": f"took {drift:.2f}x the plan"}
                if verbose:
                    print(f"Epoch 1 took {drift:.2f}x the plan; re-planned: {plan.describe()}",
                          flush=True)
        if out_dir is not None:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch + 1,
                "config": config.to_dict(), "planned_epochs": run.epochs,
                "history": history.epochs, "data": identity, "start_loss": start_loss,
                "hardware": history.hardware,
            })
            history.save(Path(out_dir) / HISTORY)
        for callback in callbacks:
            callback(history)
        epoch += 1
    return history


def _plan(config: TrainConfig, speed: Speed, steps: int, train_images: int, eval_images: int,
          *, spent_s: float, done_epochs: int = 0) -> Plan:
    """`budget.plan_epochs` for this recipe: its crop sizes depend on the run's length."""
    return plan_epochs(config.budget_s, speed, steps_per_epoch=steps,
                       batch_size=config.batch_size, train_images=train_images,
                       eval_images=eval_images, done_epochs=done_epochs, spent_s=spent_s,
                       resolution=lambda e, n: train_resolution(
                           e, dataclasses.replace(config, epochs=n)))


NOT_RECORDED = "hardware not recorded (a checkpoint written before it was)"


def resumed_hardware(state: dict[str, Any], here: str) -> str:
    """The hardware a resumed run trained on: the checkpoint's, then (if it differs) `here`,
    the machine that continues it."""
    before = state.get("hardware", NOT_RECORDED)
    return before if before == here or before.endswith(f"then {here}") else f"{before}, then {here}"


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
        f"{config.lr / 10:g}) and {_START_OVER}; {kept}")

