"""Training a classifier on CIFAR-10: a frozen recipe, `fit`, `evaluate`, checkpoints.

    from resnet_edu.data import load_cifar10
    from resnet_edu.train import preset, choose_preset, build_model, fit, evaluate

    config = preset(choose_preset())       # "gpu" on CUDA, "cpu" otherwise, "smoke" in CI
    data = load_cifar10()                  # train / val / test ImageSets
    model = build_model(config)            # ResNet-18 (CIFAR stem) at config.width
    history = fit(model, data, config, out_dir="runs/r18")   # resumes if interrupted
    evaluate(model, data.test, tta=True)   # {'loss': ..., 'acc': ..., 'acc_tta': ...}

`fit` works for any `nn.Module` that maps (B, 3, H, W) images to (B, 10) logits. Its
recipe is the `TrainConfig`: SGD with Nesterov momentum, a warm-up then decay learning-rate
schedule (one-cycle, Smith & Topin 2017, or cosine), label smoothing (Szegedy et al. 2016),
weight decay only on conv/linear weights (not on BN parameters or biases), the standard
crop + flip augmentation of He et al. 2015 (Sec. 4.2) done on the device, optional cutout,
optional progressive resizing (small crops early, full size at the end), mixed precision
and channels_last on a GPU, optional `torch.compile`.

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
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .augment import DeviceLoader
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
from .checks import SEED_MAX, check_device, check_float, check_int
from .data import Cifar10, ImageSet, fingerprint
from .runtime import (
    channels_last_trains_safely,
    cpu_has_native_bf16,
    cuda_has_native_bf16,
    default_device,
    device_name,
    quick_mode,
)

SCHEDULES = ("onecycle", "cosine", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DIVERGENCE_FACTOR = 10  # training stops when the loss exceeds 10x its starting value
DIVERGENCE_CHECK_EVERY = 10  # steps between checks (each check waits for the device)


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. Use `preset(name, **changes)` for the named ones."""

    name: str = "custom"
    width: int = 64  # ResNet-18 width for `build_model` (64 = the standard net)
    epochs: int = 10
    batch_size: int = 512
    lr: float = 0.4  # peak learning rate, reached at the end of the warm-up
    schedule: str = "onecycle"  # onecycle: linear up, linear down; cosine: linear up, cosine
    warmup: float = 0.2  # fraction of the steps spent warming up
    final_lr_fraction: float = 0.0  # lr at the last step, as a fraction of `lr`
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # on conv and linear weights only
    label_smoothing: float = 0.1
    padding: int = 4  # random-crop padding (0: no crop)
    flip: bool = True
    cutout: int = 0  # side of the cutout square in pixels (0: off)
    min_resolution: int = 32  # progressive resizing: first-epoch crop size, ramps up to 32
    full_resolution_epochs: int = 1  # the last epochs train at the full 32 x 32
    train_subset: int | None = None  # use only the first N training images (smoke tests)
    eval_batch_size: int = 1024
    tta: bool = True  # also report accuracy with test-time flip augmentation
    amp: str = "auto"  # auto: bf16 where native (GPU or CPU), fp16 on older GPUs, else off
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (GPU; the first epoch pays for it)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "epochs", "batch_size", "eval_batch_size"):
            check_int(name, getattr(self, name), low=1)
        for name in ("full_resolution_epochs", "padding", "cutout"):
            check_int(name, getattr(self, name), low=0)
        check_int("seed", self.seed, low=0, high=SEED_MAX)
        check_int("min_resolution", self.min_resolution, low=8, high=32)
        if self.train_subset is not None:
            check_int("train_subset", self.train_subset, low=1)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        check_float("lr", self.lr, low=0, low_open=True)
        check_float("weight_decay", self.weight_decay, low=0)
        for name in ("warmup", "momentum", "label_smoothing"):
            check_float(name, getattr(self, name), low=0, high=1, high_open=True)
        check_float("final_lr_fraction", self.final_lr_fraction, low=0, high=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrainConfig] = {
    # full ResNet-18 on one modern GPU: bf16, channels_last, big batches, short one-cycle
    "gpu": TrainConfig(name="gpu", width=64, epochs=12, batch_size=512, lr=0.4,
                       warmup=0.15, label_smoothing=0.2, weight_decay=5e-4, cutout=8,
                       min_resolution=32, amp="auto", channels_last=True, compile=False),
    # ResNet-18 topology at width 16 for a laptop CPU (target: 10 minutes on 2 cores, measured
    # by bench/train_cifar.py): small crops early (a 24 x 24 crop costs about half a 32 x 32
    # one), full size for the last epochs; bf16 autocast where the CPU has it natively (about
    # 2x faster). lr 0.4 / smoothing 0.2 were chosen over 0.2 / 0.1 on the validation split.
    "cpu": TrainConfig(name="cpu", width=16, epochs=16, batch_size=256, lr=0.4,
                       warmup=0.2, label_smoothing=0.2, weight_decay=5e-4,
                       min_resolution=24, full_resolution_epochs=4, amp="auto",
                       channels_last=True),
    # seconds, for CI and the notebooks' quick mode: a tiny net, two short epochs
    "smoke": TrainConfig(name="smoke", width=8, epochs=2, batch_size=128, lr=0.2,
                         warmup=0.3, train_subset=512, eval_batch_size=512, amp="off"),
}


def config_from_checkpoint(state: dict[str, Any], path: str | Path) -> TrainConfig:
    """The `TrainConfig` a checkpoint was written with (fields it lacks take their defaults)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(state["config"]) - known)
    if unknown:
        raise CheckpointError(f"{path} was written by another version of resnet-edu: its recipe "
                              f"has fields this version does not know ({', '.join(unknown)})")
    try:
        return TrainConfig(**state["config"])
    except ValueError as e:
        raise CheckpointError(f"{path} holds an invalid recipe: {e}") from None


def preset(name: str, **changes: Any) -> TrainConfig:
    """The named recipe ('gpu', 'cpu', 'smoke'), with optional field changes."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return dataclasses.replace(PRESETS[name], **changes)


def choose_preset(device: torch.device | None = None, quick: bool | None = None) -> str:
    """'smoke' in quick mode (CI), else 'gpu' on CUDA, else 'cpu' (MPS too: no bf16 there)."""
    quick = quick_mode() if quick is None else quick
    if quick:
        return "smoke"
    device = device or default_device()
    return "gpu" if device.type == "cuda" else "cpu"


def build_model(config: TrainConfig) -> nn.Module:
    """ResNet-18 with the CIFAR stem at `config.width` (the model the presets are tuned for)."""
    from .models import resnet18_cifar

    # zero-init the last BN of each block: every block starts as the identity (Goyal et al.)
    return resnet18_cifar(width=config.width, zero_init_residual=True)


# --- rules, as pure functions ------------------------------------------------------------

def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total_steps`.

    Linear warm-up from 0 to `lr` over the first `warmup` fraction (large-batch SGD needs it,
    Goyal et al. 2017), then down to `final_lr_fraction * lr`: linearly (one-cycle) or along
    a half cosine (Loshchilov & Hutter 2017); `constant` stays at `lr` after the warm-up.
    """
    if total_steps < 1 or not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, {total_steps}), got {step}")
    warm = round(config.warmup * total_steps)
    if step < warm:
        return config.lr * (step + 1) / warm
    if config.schedule == "constant":
        return config.lr
    t = (step - warm) / max(1, total_steps - warm - 1)  # 0 -> 1 over the decay
    end = config.final_lr_fraction
    if config.schedule == "onecycle":
        return config.lr * (1 - (1 - end) * t)
    return config.lr * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t)))


def train_resolution(epoch: int, config: TrainConfig) -> int:
    """Crop size of epoch `epoch` (0-based): a linear ramp from `min_resolution` to 32,
    in steps of 4 pixels, with the last `full_resolution_epochs` epochs at 32."""
    ramp = config.epochs - config.full_resolution_epochs
    if config.min_resolution >= 32 or epoch >= ramp:
        return 32
    size = config.min_resolution + (32 - config.min_resolution) * epoch / max(1, ramp)
    return min(32, int(size) // 4 * 4)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: conv/linear weights with weight decay; BN parameters and
    biases (1-D tensors) without, since decaying them only fights the normalization."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device` (None: full float32).

    bf16 only where the hardware has it: CUDA GPUs of compute capability >= 8.0 and CPUs
    with AVX512-BF16 or AMX (`runtime.cuda_has_native_bf16`, `cpu_has_native_bf16`).
    'auto' picks bf16 there (no loss scaling needed); fp16 on older CUDA GPUs (T4, V100),
    which `fit` pairs with a `GradScaler`; float32 on other CPUs (emulated bf16 is slower
    than float32) and on MPS. 'bf16' asks for it anyway on a CPU (correct, if slow there);
    on a CUDA GPU without it or on MPS it is an error, as is 'fp16' off CUDA.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if device.type != "cuda":
            return None
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp='fp16' needs a CUDA device, got {device.type}; use 'bf16' or 'off'")
    if amp == "bf16" and device.type == "cuda" and not cuda_has_native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(f"amp='bf16' needs a CUDA GPU of compute capability >= 8.0, got "
                         f"{major}.{minor} ({torch.cuda.get_device_name(device)}); "
                         "use 'fp16' or 'auto'")
    if amp == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"amp='bf16' needs a CUDA GPU or a CPU, got {device.type}; use 'off'")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none."""
    return dtype == torch.float16


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


# --- evaluation ---------------------------------------------------------------------------

def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def eval_settings(config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The keyword arguments with which `fit` evaluates a model trained with `config`: batch
    size, memory format and precision. Pass them to `evaluate` and `predict` so that a figure
    computed after training is computed exactly as the per-epoch figures were."""
    return {"device": device, "batch_size": config.eval_batch_size, "amp": config.amp,
            "channels_last": config.channels_last and channels_last_trains_safely(device)}


@torch.no_grad()
def predict(model: nn.Module, data: ImageSet, *, device: torch.device | None = None,
            batch_size: int = 1024, tta: bool = False, channels_last: bool = False,
            amp: str = "off") -> torch.Tensor:
    """Class probabilities (N, classes) on the CPU; with `tta`, the mean of the image's and
    its mirror image's probabilities (test-time flip augmentation)."""
    device = device or next(model.parameters()).device
    dtype = resolve_amp(amp, device)
    was_training = model.training
    model.eval()
    out = []
    loader = DeviceLoader(data, batch_size, train=False, device=device,
                          channels_last=channels_last)
    for x, _ in loader:  # x: (B, 3, 32, 32)
        with _autocast(device, dtype):
            p = model(x).float().softmax(1)  # (B, classes)
            if tta:
                p = (p + model(x.flip(3)).float().softmax(1)) / 2
        out.append(p.cpu())
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, *, device: torch.device | None = None,
             batch_size: int = 1024, tta: bool = False, channels_last: bool = False,
             amp: str = "off") -> dict[str, float]:
    """Cross-entropy and accuracy on `data`; with `tta`, also `acc_tta` (flip TTA)."""
    device = device or next(model.parameters()).device
    dtype = resolve_amp(amp, device)
    was_training = model.training
    model.eval()
    loss = correct = correct_tta = 0.0
    loader = DeviceLoader(data, batch_size, train=False, device=device,
                          channels_last=channels_last)
    for x, y in loader:  # x: (B, 3, 32, 32), y: (B,)
        with _autocast(device, dtype):
            logits = model(x).float()  # (B, classes)
            loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            if tta:
                p = logits.softmax(1) + model(x.flip(3)).float().softmax(1)
                correct_tta += (p.argmax(1) == y).sum().item()
    model.train(was_training)
    n = max(1, len(data))
    result = {"loss": loss / n, "acc": correct / n}
    if tta:
        result["acc_tta"] = correct_tta / n
    return result


# --- fit ----------------------------------------------------------------------------------

def _progress_bar(total: int, desc: str, enabled: bool):
    from .widgets import live_widgets

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
        verbose: bool = True,
        callbacks: Iterable[Callable[[History], None]] = ()) -> History:
    """Train `model` on `data.train` with the recipe `config`; return the per-epoch history.

    After each epoch: evaluate the `eval_splits` ('val', 'test', 'train'), append a record,
    call each callback with the history, and (if `out_dir`) write `history.json` and
    `checkpoint.pt`. With `resume` and a checkpoint in `out_dir`, training continues from it
    (a finished run returns at once); a checkpoint of another recipe or other data is
    refused. `model` is trained in place and left on `device`.

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
               verbose=verbose, callbacks=callbacks)
    if out_dir is None:
        return _fit(model, data, config, out_dir=None, **run)
    out = prepare_out_dir(out_dir)
    with lock_out_dir(out):
        remove_stale_temp_files(out)
        return _fit(model, data, config, out_dir=out, **run)


def _fit(model: nn.Module, data: Cifar10, config: TrainConfig, *, out_dir: Path | None,
         device: torch.device, resume: bool, eval_splits: Sequence[str], progress: bool,
         verbose: bool, callbacks: Iterable[Callable[[History], None]]) -> History:
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
    total_steps = config.epochs * len(loader)
    history = History(config.to_dict(), f"{device_name(device)}")
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
        history = History(state["config"], resumed_hardware(state, history.hardware),
                          list(state["history"]))
        start_epoch = int(state["epoch"])
        start_loss = state.get("start_loss")
        if start_epoch >= config.epochs:  # finished: the loaded run's own hardware only
            history.hardware = state.get("hardware", NOT_RECORDED)
        if start_loss is None and history.epochs:  # written before the guard existed
            start_loss = history.epochs[0]["train_loss"]
        if verbose and start_epoch < config.epochs:
            print(f"Resuming from {ckpt_path} after epoch {start_epoch}/{config.epochs}")
        elif verbose:
            print(f"The run in {ckpt_path} is finished ({start_epoch} epochs): loaded it. "
                  f"To train again, {_START_OVER}.")
    prior = history.last
    train_time, wall_time = prior.get("train_time_s", 0.0), prior.get("wall_time_s", 0.0)

    model.train()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        loader.set_epoch(epoch)
        loader.size = train_resolution(epoch, config)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        peak = torch.zeros((), device=device)  # the epoch's largest loss (nan if any is nan)
        seen = 0
        bar = _progress_bar(len(loader), f"epoch {epoch + 1}/{config.epochs}", progress)
        for i, (x, y) in enumerate(loader):  # x: (B, 3, S, S) float, y: (B,)
            lr = lr_at(epoch * len(loader) + i, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(device, dtype):
                logits = forward(x)  # (B, classes)
                loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            peak = torch.maximum(peak, loss.detach())
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
            print(f"epoch {epoch + 1:>2}/{config.epochs}  "
                  + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
                  + f"  {epoch_time:.0f} s", flush=True)
        if out_dir is not None:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch + 1,
                "config": config.to_dict(), "history": history.epochs,
                "data": identity, "start_loss": start_loss, "hardware": history.hardware,
            })
            history.save(Path(out_dir) / HISTORY)
        for callback in callbacks:
            callback(history)
    return history


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
