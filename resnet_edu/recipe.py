"""The training recipe as data and pure rules: `TrainConfig`, the presets, the learning-rate
schedule, the crop size per epoch, the weight-decay groups (mixed precision: `precision`).

    config = preset("cpu", epochs=4)      # a frozen TrainConfig
    lr_at(step, total_steps, config)      # the schedule, one step at a time
    train_resolution(epoch, config)       # progressive resizing: the crop size of an epoch

Nothing here trains: `resnet_edu.train.fit` runs the recipe, and the exercises and notebook
04 plot these rules on their own.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .checks import SEED_MAX, check_float, check_int
from .data import IMAGE_SIZE
from .precision import AMP_MODES
from .runtime import default_device, quick_mode

SCHEDULES = ("onecycle", "cosine", "constant")


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
    decay_norm_and_bias: bool = False  # also decay BN parameters and biases (an ablation)
    zero_init_residual: bool = True  # the last BN of each block starts at 0 (build_model)
    label_smoothing: float = 0.1
    padding: int = 4  # random-crop padding (0: no crop)
    flip: bool = True
    cutout: int = 0  # side of the cutout square in pixels (0: off)
    min_resolution: int = IMAGE_SIZE  # progressive resizing: first-epoch crop size, ramps up
    full_resolution_epochs: int = 1  # the last epochs train at the full IMAGE_SIZE
    train_subset: int | None = None  # use only the first N training images (smoke tests)
    eval_batch_size: int = 1024
    tta: bool = True  # also report accuracy with test-time flip augmentation
    amp: str = "auto"  # auto: bf16 where native (GPU or CPU), fp16 on older GPUs, else off
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (GPU; the first epoch pays for it)
    seed: int = 0
    # seconds of training and evaluation; `fit` plans `epochs` to end on time (budget.py)
    budget_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("width", "epochs", "batch_size", "eval_batch_size"):
            check_int(name, getattr(self, name), low=1)
        for name in ("full_resolution_epochs", "padding", "cutout"):
            check_int(name, getattr(self, name), low=0)
        check_int("seed", self.seed, low=0, high=SEED_MAX)
        check_int("min_resolution", self.min_resolution, low=8, high=IMAGE_SIZE)
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
        if self.budget_s is not None:
            check_float("budget_s", self.budget_s, low=0, low_open=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrainConfig] = {
    # full ResNet-18 on one modern GPU: bf16, channels_last, big batches, short one-cycle
    "gpu": TrainConfig(name="gpu", width=64, epochs=12, batch_size=512, lr=0.4,
                       warmup=0.15, label_smoothing=0.2, weight_decay=5e-4, cutout=8,
                       min_resolution=IMAGE_SIZE, amp="auto", channels_last=True, compile=False),
    # ResNet-18 topology at width 16 for a laptop CPU: a 10-minute time budget (budget.py
    # plans the epochs for the machine at hand; `epochs` counts only when the budget is
    # removed, budget_s=None); small crops early (a 24 x 24 crop costs about half a 32 x 32
    # one), full size for the last epochs; bf16 autocast where the CPU has it natively (about
    # 2x faster). lr 0.4 / smoothing 0.2 were chosen over 0.2 / 0.1 on the validation split.
    "cpu": TrainConfig(name="cpu", width=16, epochs=16, batch_size=256, lr=0.4,
                       warmup=0.2, label_smoothing=0.2, weight_decay=5e-4,
                       min_resolution=24, full_resolution_epochs=4, amp="auto",
                       channels_last=True, budget_s=600.0),
    # seconds, for CI and the notebooks' quick mode: a tiny net, two short epochs
    "smoke": TrainConfig(name="smoke", width=8, epochs=2, batch_size=128, lr=0.2,
                         warmup=0.3, train_subset=512, eval_batch_size=512, amp="off"),
}


def preset(name: str, **changes: Any) -> TrainConfig:
    """The named recipe ('gpu', 'cpu', 'smoke'), with optional field changes."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return dataclasses.replace(PRESETS[name], **changes)


# On the shipped sample (1,800 training images) a time budget buys hundreds of epochs that
# mostly memorise it; notebook 04 trains this many there instead: the best of 10, 20 and 40
# epochs of the `cpu` preset on the sample's validation images (bench/sample_epochs.py,
# resnet_edu/shipped/results/sample_epochs.json, where 40 was still improving on 20)
SAMPLE_EPOCHS = 40


def on_the_sample(config: TrainConfig) -> TrainConfig:
    """`config` as notebook 04 trains it on the shipped sample: a budgeted recipe becomes
    SAMPLE_EPOCHS fixed epochs; a recipe without a budget is kept as it is."""
    if config.budget_s is None:
        return config
    return dataclasses.replace(config, epochs=SAMPLE_EPOCHS, budget_s=None)


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

    # zero-init the last BN of each block (Goyal et al. 2017, Sec. 5.1): a block with an
    # identity shortcut starts as the identity; a downsampling block starts as its projection
    return resnet18_cifar(width=config.width, zero_init_residual=config.zero_init_residual)


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
    """Crop size of epoch `epoch` (0-based): a linear ramp from `min_resolution` to the full
    IMAGE_SIZE (32), in steps of 4 pixels, with the last `full_resolution_epochs` at full size."""
    ramp = config.epochs - config.full_resolution_epochs
    if config.min_resolution >= IMAGE_SIZE or epoch >= ramp:
        return IMAGE_SIZE
    size = config.min_resolution + (IMAGE_SIZE - config.min_resolution) * epoch / max(1, ramp)
    return min(IMAGE_SIZE, int(size) // 4 * 4)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False
                 ) -> list[dict[str, Any]]:
    """Two optimizer groups: conv/linear weights with weight decay; BN parameters and
    biases (1-D tensors) without: Bag of Tricks' "no bias decay" (He et al. 2019, Sec. 3.1),
    which counts it against overfitting; some reproductions decay every parameter instead
    (`decay_norm_and_bias=True`: both groups decay)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": weight_decay if decay_norm_and_bias else 0.0}]


def smoothed_loss_floor(label_smoothing: float, classes: int = 10) -> float:
    """The smallest cross-entropy a model can reach against label-smoothed targets: the
    entropy of the target, (1 - eps + eps/K) on the true class and eps/K on each other one.
    0.867 nats for eps = 0.2 and K = 10; 0 without smoothing."""
    if label_smoothing <= 0:
        return 0.0
    true, other = 1 - label_smoothing + label_smoothing / classes, label_smoothing / classes
    return -(true * math.log(true) + (classes - 1) * other * math.log(other))
