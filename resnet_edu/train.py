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
import os
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
from .data import Cifar10, ImageSet
from .runtime import (
    cpu_has_native_bf16,
    cuda_has_native_bf16,
    default_device,
    device_name,
    quick_mode,
)

SCHEDULES = ("onecycle", "cosine", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"


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
        positive = ("width", "epochs", "batch_size", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("warmup", "momentum", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        if self.weight_decay < 0 or self.padding < 0 or self.cutout < 0:
            raise ValueError("weight_decay, padding and cutout must be >= 0, got "
                             f"{self.weight_decay}, {self.padding}, {self.cutout}")
        if not 8 <= self.min_resolution <= 32:
            raise ValueError(f"min_resolution must be in 8..32, got {self.min_resolution}")
        if self.train_subset is not None and self.train_subset < 1:
            raise ValueError(f"train_subset must be None or >= 1, got {self.train_subset}")

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

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "hardware": self.hardware, "epochs": self.epochs}

    def save(self, path: str | Path) -> None:
        _atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> History:
        d = json.loads(Path(path).read_text())
        return cls(d["config"], d.get("hardware", ""), d["epochs"])


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: to a temporary file first, then renamed over `path`, so an
    interruption leaves either the old checkpoint or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU with `weights_only=True` (no arbitrary code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


# --- evaluation ---------------------------------------------------------------------------

def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


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


def _check_resume(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    now = config.to_dict()
    differ = sorted(k for k in now if saved.get(k) != now[k])
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differ)
        raise ValueError(f"{path} was written with a different config ({detail}); resuming "
                         "would not reproduce the run: use another out_dir or resume=False")


def fit(model: nn.Module, data: Cifar10, config: TrainConfig, *,
        out_dir: str | Path | None = None, device: torch.device | None = None,
        resume: bool = True, eval_splits: Sequence[str] = ("val",), progress: bool = True,
        verbose: bool = True,
        callbacks: Iterable[Callable[[History], None]] = ()) -> History:
    """Train `model` on `data.train` with the recipe `config`; return the per-epoch history.

    After each epoch: evaluate the `eval_splits` ('val', 'test', 'train'), append a record,
    call each callback with the history, and (if `out_dir`) write `history.json` and
    `checkpoint.pt`. With `resume` and a checkpoint in `out_dir`, training continues from it
    (a finished run returns at once). `model` is trained in place and left on `device`.
    """
    for split in eval_splits:
        if split not in ("train", "val", "test"):
            raise ValueError(f"eval_splits must name 'train', 'val' or 'test', got {split!r}")
    device = device or default_device()
    dtype = resolve_amp(config.amp, device)
    channels_last = config.channels_last and device.type != "mps"
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
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        _check_resume(state["config"], config, ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history = History(state["config"], history.hardware, list(state["history"]))
        start_epoch = int(state["epoch"])
        if verbose and start_epoch < config.epochs:
            print(f"Resuming from {ckpt_path} after epoch {start_epoch}/{config.epochs}")
        elif verbose:
            print(f"The run in {ckpt_path} is finished ({start_epoch} epochs): loaded it. "
                  "Use another out_dir or resume=False to train again.")
    prior = history.last
    train_time, wall_time = prior.get("train_time_s", 0.0), prior.get("wall_time_s", 0.0)

    model.train()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        loader.set_epoch(epoch)
        loader.size = train_resolution(epoch, config)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
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
            result = evaluate(model, getattr(data, split), device=device, tta=config.tta,
                              batch_size=config.eval_batch_size,
                              channels_last=channels_last, amp=config.amp)
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
            })
            history.save(Path(out_dir) / HISTORY)
        for callback in callbacks:
            callback(history)
    return history
