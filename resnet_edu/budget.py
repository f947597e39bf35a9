"""Training to a time budget: how many epochs fit in `budget_s` seconds on this machine.

A fixed epoch count either wastes a fast machine or overruns a slow one: the same recipe takes
minutes on one laptop and an hour on another. With `TrainConfig(budget_s=600)`, `fit` first
measures this machine (a few training steps of a throwaway copy of the model, at the smallest
and the full crop size, and one evaluation batch), then plans the number of epochs, and so the
learning-rate schedule and the crop sizes, to end on time, evaluations included:

    plan = plan_epochs(600, speed, train_images=45_000, ...)
    print(plan.describe())   # "8 epochs of 45,000 images at about 310 img/s (full size) ..."

After the first epoch it compares the epoch's real time with the plan, and if they differ by
more than 20 % (another program started, the CPU throttled) it plans the remaining epochs once
more. The plan is stored in the checkpoint, so a resumed run finishes the same schedule.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from .augment import DeviceLoader
from .data import IMAGE_SIZE, ImageSet

REPLAN_DRIFT = 0.2  # re-plan once when the first epoch takes 20 % more or less than planned
PROBE_STEPS = 3  # timed training steps per crop size (after one untimed warm-up step)
MAX_EPOCHS = 500


@dataclass(frozen=True)
class Speed:
    """Measured seconds per training step at the smallest and the full crop size, and
    seconds per evaluated image (all evaluated splits, flip TTA included when on)."""

    step_s_min: float
    step_s_full: float
    min_resolution: int
    eval_s_per_image: float

    def step_s(self, resolution: int) -> float:
        """A step's time at `resolution`: linear in the crop's pixel count between the two
        measured sizes (a conv's cost is proportional to the pixels it visits)."""
        if self.min_resolution >= IMAGE_SIZE:
            return self.step_s_full
        share = (resolution**2 - self.min_resolution**2) / (IMAGE_SIZE**2 - self.min_resolution**2)
        return self.step_s_min + share * (self.step_s_full - self.step_s_min)

    def scaled(self, factor: float) -> Speed:
        """Every time `factor` times longer (the first epoch's drift from the plan)."""
        return replace(self, step_s_min=self.step_s_min * factor,
                       step_s_full=self.step_s_full * factor,
                       eval_s_per_image=self.eval_s_per_image * factor)


@dataclass(frozen=True)
class Plan:
    """The epochs that fit the budget, and what they are expected to cost."""

    epochs: int
    budget_s: float
    expected_s: float  # training and evaluation of all planned epochs, probe excluded
    train_images: int
    images_per_s_full: float
    fits: bool  # False: even one epoch is over the budget (one is trained anyway)

    def describe(self) -> str:
        text = (f"{self.epochs} epoch{'s' if self.epochs != 1 else ''} of "
                f"{self.train_images:,} images at about {self.images_per_s_full:,.0f} img/s "
                f"(full-size crops), expected {_duration(self.expected_s)} of the "
                f"{_duration(self.budget_s)} budget")
        if not self.fits:
            text += ": one epoch is already over the budget on this machine"
        return text


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def parse_budget(name: str, text: str) -> float | None:
    """'10m', '90s', '600' (seconds) or '1.5h' as seconds; 'none' as None (no budget)."""
    value = text.strip().lower()
    if value == "none":
        return None
    units = {"s": 1, "m": 60, "min": 60, "h": 3600}
    unit = next((u for u in sorted(units, key=len, reverse=True) if value.endswith(u)), "")
    try:
        seconds = float(value[:len(value) - len(unit)]) * units.get(unit, 1)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a positive time such as 10m, 90s or 600 (seconds), "
                         f"or 'none', got {text!r}")
    return seconds


def epoch_seconds(speed: Speed, resolution: int, steps: int, eval_images: int) -> float:
    """One epoch of `steps` training steps at `resolution`, then `eval_images` evaluated."""
    return steps * speed.step_s(resolution) + eval_images * speed.eval_s_per_image


def plan_epochs(budget_s: float, speed: Speed, *, steps_per_epoch: int, batch_size: int,
                train_images: int, eval_images: int,
                resolution: Callable[[int, int], int], done_epochs: int = 0,
                spent_s: float = 0.0) -> Plan:
    """The most epochs whose expected time fits `budget_s - spent_s`.

    `resolution(epoch, epochs)` is the crop size of epoch `epoch` (0-based) in an `epochs`-long
    run (the crops grow over the run, so the plan depends on its own length); `done_epochs`
    epochs have been trained already and cost `spent_s`.
    """
    def expected(epochs: int) -> float:
        return sum(epoch_seconds(speed, resolution(e, epochs), steps_per_epoch, eval_images)
                   for e in range(done_epochs, epochs))

    best = max(1, done_epochs)
    for epochs in range(max(1, done_epochs), MAX_EPOCHS + 1):
        if spent_s + expected(epochs) > budget_s:
            break
        best = epochs
    fits = spent_s + expected(best) <= budget_s
    return Plan(epochs=best, budget_s=budget_s, expected_s=spent_s + expected(best),
                train_images=train_images,
                images_per_s_full=batch_size / speed.step_s_full, fits=fits)


def measure_speed(model: nn.Module, train_set: ImageSet, eval_set: ImageSet, *,
                  batch_size: int, eval_batch_size: int, min_resolution: int,
                  train_step: Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor,
                                        torch.Tensor], None],
                  evaluate_batch: Callable[[nn.Module, ImageSet], None],
                  device: torch.device, channels_last: bool) -> Speed:
    """Time `train_step` on a throwaway copy of `model` (the run itself starts untouched) at
    the smallest and the full crop size, and `evaluate_batch` (an evaluation as `fit` makes
    it, flip TTA included when on) on one batch of `eval_set`."""
    probe = copy.deepcopy(model)
    optimizer = torch.optim.SGD(probe.parameters(), lr=1e-3)  # steps whose result is thrown away
    images = train_set.subset(slice(0, min(len(train_set), batch_size * (PROBE_STEPS + 1))))

    def seconds_per_step(size: int) -> float:
        loader = DeviceLoader(images, batch_size, train=True, device=device, size=size,
                              channels_last=channels_last, seed=0)
        batches = iter(loader)
        x, y = next(batches)
        train_step(probe, optimizer, x, y)  # warm-up: allocations, kernel choice
        _sync(device)
        timed, start = 0, time.perf_counter()
        for x, y in batches:
            train_step(probe, optimizer, x, y)
            timed += 1
            if timed == PROBE_STEPS:
                break
        _sync(device)
        return (time.perf_counter() - start) / max(1, timed)

    step_full = seconds_per_step(IMAGE_SIZE)
    step_min = seconds_per_step(min_resolution) if min_resolution < IMAGE_SIZE else step_full
    batch = eval_set.subset(slice(0, min(len(eval_set), eval_batch_size)))
    evaluate_batch(model, batch)  # warm-up
    _sync(device)
    start = time.perf_counter()
    evaluate_batch(model, batch)
    _sync(device)
    per_image = (time.perf_counter() - start) / max(1, len(batch))
    return Speed(step_s_min=step_min, step_s_full=step_full, min_resolution=min_resolution,
                 eval_s_per_image=per_image)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
