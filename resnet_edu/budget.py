"""Training to a time budget: how many epochs fit in `budget_s` seconds on this machine.

A fixed epoch count either wastes a fast machine or overruns a slow one: the same recipe takes
minutes on one laptop and an hour on another. With `TrainConfig(budget_s=600)`, `fit` first
measures this machine (training steps of a throwaway copy of the model at the smallest and the
full crop size, and an evaluation batch), then plans the run, and so the learning-rate schedule
and the crop sizes, to end on time. The plan counts the whole command: what was spent before
it (start-up, loading the data, the probe), every epoch's training steps, its evaluation
passes (flip TTA included), the time between epochs (checkpoint, callbacks), the warm-up of
each new crop size, and what the caller keeps back for after it (the final test evaluation).
The last epoch may be cut short, so that the run ends close to its budget, not an epoch early:

    plan = plan_epochs(600, speed, steps_per_epoch=175, ...)
    print(plan.describe())   # "21 epochs of 45,000 images at about 1,350 img/s ..."

Warm-up. The first steps of a run, and the first steps at each new crop size, are slower
than the rest, and must not be taken for the machine's speed. Measured with a width-16
ResNet-18 (the cpu preset, float32, batch 64, one thread) on a 2-core AMD EPYC without
AVX-512 (torch 2.14): the first step at a new crop size took 1.3-1.5x a later one; it made
15,000-20,000 minor page faults (60-80 MB touched for the first time: glibc's malloc hands out
fresh pages until its heap has grown to the largest step's working set), falling to none after
3-4 steps; and oneDNN created 43-64 primitives for the new shapes (about 12 ms; they are cached,
so a size seen once is fast again, and a smaller size after a larger one makes no new page
faults). Where oneDNN JIT-compiles bf16 kernels (AMX, AVX512-BF16) the creation costs more: on
a Xeon with AMX the first ~20 steps of a run took about 10x the later ones. So the probe times
steps only after PROBE_WARMUP_STEPS untimed ones, the plan charges the measured warm-up once per
crop size the probe did not see, and the run's own step times count only after WARMUP_STEPS
steps at each crop size.

Drift. During the run, `Pace` compares the measured step times (after the warm-up, in windows
between the points where `fit` waits for the device anyway) with the plan's. Only when
DRIFT_WINDOWS windows in a row are off by more than REPLAN_DRIFT on the same side (another
program started, the CPU throttled) are the remaining epochs planned again, from the speed
those windows measured. After the first epoch, the plan's estimated per-epoch costs are
replaced by what that epoch measured for them (its evaluation passes, the time between epochs)
and the plan is completed with them; that is a correction of the plan's terms, not of the
machine's speed. The plan is stored in the checkpoint, so a resumed run finishes the same
schedule.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch

from .checks import ArgumentError
from .data import IMAGE_SIZE, ImageSet

REPLAN_DRIFT = 0.2  # a window whose steps take 20 % more or less than planned is off the plan
DRIFT_WINDOWS = 10  # ... and this many such windows in a row, on the same side, are a drift
WARMUP_STEPS = 5  # steps at each crop size before the run's step times count
PROBE_WARMUP_STEPS = 3  # untimed steps per crop size in the probe
PROBE_STEPS = 3  # timed training steps per crop size
MAX_EPOCHS = 500


@dataclass(frozen=True)
class Speed:
    """Measured seconds per training step at the smallest and the full crop size, seconds per
    evaluated image (all evaluated splits, flip TTA included when on), the extra seconds the
    first steps at a new crop size cost (warm-up), and the seconds between epochs
    (checkpoint, callbacks; 0 until an epoch has measured it)."""

    step_s_min: float
    step_s_full: float
    min_resolution: int
    eval_s_per_image: float
    warmup_s: float = 0.0
    between_epochs_s: float = 0.0

    def step_s(self, resolution: int) -> float:
        """A step's time at `resolution`: linear in the crop's pixel count between the two
        measured sizes (a conv's cost is proportional to the pixels it visits)."""
        if self.min_resolution >= IMAGE_SIZE:
            return self.step_s_full
        share = (resolution**2 - self.min_resolution**2) / (IMAGE_SIZE**2 - self.min_resolution**2)
        return self.step_s_min + share * (self.step_s_full - self.step_s_min)

    def scaled(self, factor: float) -> Speed:
        """Every step and evaluation `factor` times longer (a drift measured during the run)."""
        return replace(self, step_s_min=self.step_s_min * factor,
                       step_s_full=self.step_s_full * factor,
                       eval_s_per_image=self.eval_s_per_image * factor)


@dataclass(frozen=True)
class Plan:
    """The epochs and steps that fit the budget, and what they are expected to cost."""

    epochs: int
    steps: int  # optimizer steps in all: the last epoch may be cut short
    steps_per_epoch: int
    budget_s: float
    expected_s: float  # the whole command: spent before, the planned epochs, kept for after
    train_images: int
    images_per_s_full: float
    fits: bool  # False: even one epoch is over the budget (one is trained anyway)

    def describe(self) -> str:
        text = (f"{self.epochs} epoch{'s' if self.epochs != 1 else ''} of "
                f"{self.train_images:,} images at about {self.images_per_s_full:,.0f} img/s "
                f"(full-size crops), expected {_duration(self.expected_s)} of the "
                f"{_duration(self.budget_s)} budget")
        last = self.steps - (self.epochs - 1) * self.steps_per_epoch
        if last < self.steps_per_epoch:
            text += f" (the last epoch stops after {last} of its {self.steps_per_epoch} steps)"
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
        raise ArgumentError(name, "must be a positive time such as 10m, 90s or 600 (seconds), "
                                  f"or 'none', got {text!r}")
    return seconds


def epoch_seconds(speed: Speed, resolution: int, steps: int, eval_images: int) -> float:
    """One epoch of `steps` training steps at `resolution`, then `eval_images` evaluated, then
    the time between epochs."""
    return (steps * speed.step_s(resolution) + eval_images * speed.eval_s_per_image
            + speed.between_epochs_s)


def plan_epochs(budget_s: float, speed: Speed, *, steps_per_epoch: int, batch_size: int,
                train_images: int, eval_images: int,
                resolution: Callable[[int, int], int], done_epochs: int = 0,
                spent_s: float = 0.0, warm: Iterable[int] = ()) -> Plan:
    """The most steps whose expected time fits `budget_s - spent_s`, in whole epochs but the
    last.

    `resolution(epoch, epochs)` is the crop size of epoch `epoch` (0-based) in an `epochs`-long
    run (the crops grow over the run, so the plan depends on its own length); `done_epochs`
    epochs have been trained already and, with everything else spent so far, cost `spent_s`.
    The run's start, and each crop size not in `warm` (the sizes already run), cost
    `speed.warmup_s` once.
    """
    warm = set(warm)

    def expected(epochs: int, last_steps: int) -> float:
        sizes = [resolution(e, epochs) for e in range(done_epochs, epochs)]
        full = sum(epoch_seconds(speed, size, steps_per_epoch, eval_images) for size in sizes)
        cut = (steps_per_epoch - last_steps) * speed.step_s(sizes[-1]) if sizes else 0.0
        start = 1 if done_epochs == 0 else 0  # the run's first steps warm up too
        return spent_s + full - cut + speed.warmup_s * (len(set(sizes) - warm) + start)

    epochs = max(1, done_epochs)  # a re-plan may end the run at once
    while epochs < MAX_EPOCHS and expected(epochs + 1, 1) <= budget_s:
        epochs += 1
    last = steps_per_epoch
    if epochs > done_epochs and expected(epochs, steps_per_epoch) > budget_s:  # cut it short
        over = expected(epochs, steps_per_epoch) - budget_s
        size = resolution(epochs - 1, epochs)
        last = max(1, steps_per_epoch - math.ceil(over / speed.step_s(size)))
    total = expected(epochs, last)
    return Plan(epochs=epochs, steps=(epochs - 1) * steps_per_epoch + last,
                steps_per_epoch=steps_per_epoch, budget_s=budget_s, expected_s=total,
                train_images=train_images, images_per_s_full=batch_size / speed.step_s_full,
                fits=total <= budget_s)


class Pace:
    """The run's measured step times against the plan's `speed`: is there a lasting drift?

        pace = Pace(speed)
        pace.observe(resolution=24, steps=10, seconds=4.1)   # a window of steps, timed
        factor = pace.drift()    # None, or how much slower (> 1) or faster the machine runs

    Windows that start within the first WARMUP_STEPS steps at their crop size are warm-up and
    are not counted. A drift is DRIFT_WINDOWS counted windows in a row, each off the plan by
    more than REPLAN_DRIFT on the same side; its factor is their median.
    """

    def __init__(self, speed: Speed) -> None:
        self.speed = speed
        self.steps_at: dict[int, int] = {}  # steps run so far at each crop size
        self.ratios: deque[float] = deque(maxlen=DRIFT_WINDOWS)

    def observe(self, resolution: int, steps: int, seconds: float, count: bool = True) -> None:
        """`steps` steps at `resolution` took `seconds`; `count=False`: a window that also
        holds other work (the epoch's start), whose steps only count toward the warm-up."""
        before = self.steps_at.get(resolution, 0)
        self.steps_at[resolution] = before + steps
        if count and before >= WARMUP_STEPS and steps > 0:
            self.ratios.append(seconds / (steps * self.speed.step_s(resolution)))

    def drift(self) -> float | None:
        if len(self.ratios) < DRIFT_WINDOWS:
            return None
        if all(r > 1 + REPLAN_DRIFT for r in self.ratios) or all(
                r < 1 - REPLAN_DRIFT for r in self.ratios):
            return statistics.median(self.ratios)
        return None

    def rebase(self, speed: Speed) -> None:
        """Measure against `speed` from now on (after a re-plan)."""
        self.speed = speed
        self.ratios.clear()


def clock() -> float:
    """The planner's clock (tests replace it with a fake one)."""
    return time.perf_counter()


class Planner:
    """The plan of one run and its corrections: `plan` at the start, `timer` to measure each
    epoch's steps, `after_epoch` to complete the plan after epoch 1 and to re-plan on a drift."""

    def __init__(self, budget_s: float, speed: Speed, *, start: float, steps_per_epoch: int,
                 batch_size: int, train_images: int, eval_images: int,
                 resolution: Callable[[int, int], int]) -> None:
        self.budget_s, self.speed, self.pace = budget_s, speed, Pace(speed)
        self.start = start  # the command's start, on the planner's `clock`
        self.shape = dict(steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                          train_images=train_images, eval_images=eval_images,
                          resolution=resolution)
        self.warm = {speed.min_resolution, IMAGE_SIZE}  # the sizes the probe ran
        self.train_end = self.start

    def plan(self, done_epochs: int) -> Plan:
        """The plan from here, `done_epochs` epochs done, the time spent so far counted."""
        return plan_epochs(self.budget_s, self.speed, done_epochs=done_epochs,
                           spent_s=clock() - self.start, warm=self.warm | set(self.pace.steps_at),
                           **self.shape)

    def timer(self, resolution: int) -> Callable[[int], None]:
        """`timer(steps_done)` at each point of an epoch where the device was waited for."""
        last = [0, clock()]

        def observe(done: int) -> None:
            now = clock()
            self.pace.observe(resolution, done - last[0], now - last[1], count=last[0] > 0)
            last[:] = [done, now]
            self.train_end = now
        return observe

    def after_epoch(self, done_epochs: int) -> tuple[Plan, str] | None:
        """A new plan and why, or None. After epoch 1 the plan's estimate of what follows an
        epoch's training (its evaluation passes, checkpoint, callbacks) is replaced by what
        epoch 1 measured; on a drift (`Pace`) the steps' speed is scaled by it."""
        why = []
        if done_epochs == 1:
            self.speed = replace(self.speed, eval_s_per_image=0.0,
                                 between_epochs_s=clock() - self.train_end)
            why.append("completed with epoch 1's evaluation and checkpoint times")
        factor = self.pace.drift()
        if factor is not None:
            self.speed = self.speed.scaled(factor)
            self.pace.rebase(self.speed)
            why.append(f"the steps took {factor:.2f}x the plan")
        return (self.plan(done_epochs), "; ".join(why)) if why else None


def measure_speed(train_step: Callable[[torch.Tensor, torch.Tensor], object],
                  batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                  evaluate_batch: Callable[[ImageSet], object], eval_batch: ImageSet, *,
                  min_resolution: int, device: torch.device) -> Speed:
    """Time `train_step(x, y)` (on a throwaway copy of the run's model and optimizer, built by
    the same builder as the run's) on `batches(size)` at the full and the smallest crop size,
    after PROBE_WARMUP_STEPS untimed steps at each, and `evaluate_batch` (an evaluation as
    `fit` makes it, flip TTA included when on) on `eval_batch`, after one untimed pass."""
    def seconds_per_step(size: int) -> tuple[float, float]:
        times = []
        for x, y in batches(size):
            start = time.perf_counter()
            train_step(x, y)
            _sync(device)
            times.append(time.perf_counter() - start)
            if len(times) == PROBE_WARMUP_STEPS + PROBE_STEPS:
                break
        steady = statistics.median(times[PROBE_WARMUP_STEPS:] or times)
        return steady, max(0.0, sum(times[:PROBE_WARMUP_STEPS]) - len(times[:PROBE_WARMUP_STEPS])
                           * steady)

    step_full, warmup = seconds_per_step(IMAGE_SIZE)
    step_min = step_full
    if min_resolution < IMAGE_SIZE:
        step_min, warmup_min = seconds_per_step(min_resolution)
        warmup = min(warmup, warmup_min)  # the first size also paid for the run's first steps
    evaluate_batch(eval_batch)  # warm-up
    _sync(device)
    start = time.perf_counter()
    evaluate_batch(eval_batch)
    _sync(device)
    per_image = (time.perf_counter() - start) / max(1, len(eval_batch))
    return Speed(step_s_min=step_min, step_s_full=step_full, min_resolution=min_resolution,
                 eval_s_per_image=per_image, warmup_s=warmup)


def evaluation_seconds(evaluate_batch: Callable[[ImageSet], object], batch: ImageSet,
                       images: int) -> float:
    """The expected time of an evaluation of `images` images, from one timed pass of
    `evaluate_batch` over `batch` after an untimed one (its warm-up)."""
    evaluate_batch(batch)
    start = time.perf_counter()
    evaluate_batch(batch)
    return (time.perf_counter() - start) * images / max(1, len(batch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
