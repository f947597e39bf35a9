"""A training run's record: its per-epoch `History`, and `RunState`, where a run is (its
planned schedule, the epochs done) with the checkpoint that lets `fit` resume it exactly.

A checkpoint records the recipe and a fingerprint of the data it was trained on; resuming
with another recipe or other data is refused (`check_resume`), since the run would no longer
be the run it says it is.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .budget import Plan
from .checkpoints import (
    CHECKPOINT,
    HISTORY,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from .data import Cifar10, fingerprint
from .recipe import TrainConfig
from .runtime import device_name

if TYPE_CHECKING:
    from .train import DivergenceGuard, Parts

START_OVER = "start over in another output folder, or with --no-resume (resume=False in Python)"


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


def data_fingerprint(data: Cifar10) -> dict[str, Any]:
    """What a checkpoint records about its data: where it was read and a fingerprint."""
    return {"source": data.source, "train": len(data.train), "val": len(data.val),
            "fingerprint": fingerprint(data)}


def check_resume(state: dict[str, Any], config: TrainConfig, data: dict[str, Any],
                  path: Path) -> None:
    saved, now = state["config"], config.to_dict()
    differ = sorted(k for k in now if saved.get(k) != now[k])
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differ)
        raise CheckpointError(f"{path} was written with a different recipe ({detail}); "
                              f"resuming would not reproduce the run: {START_OVER}")
    before = state["data"]
    if before["fingerprint"] != data["fingerprint"]:
        raise CheckpointError(
            f"{path} was trained on other data ({before['train']} training and "
            f"{before['val']} validation images from {before['source']}; now "
            f"{data['train']} and {data['val']} from {data['source']}); resuming would mix "
            f"the two in one run: use the same data as before, or {START_OVER}")


@dataclass
class RunState:
    """Where a run is: its recipe as trained (`config.epochs` planned), its total steps, the
    epochs done, the history, and where its checkpoint goes."""

    config: TrainConfig  # the recipe as asked for, for the checkpoint's resume check
    run: TrainConfig  # the recipe as trained: with a time budget, its epochs are planned
    total_steps: int
    history: History
    ckpt_path: Path | None
    fingerprint: dict[str, Any] | None  # of the data, for the resume check
    epoch: int = 0
    start_loss: float | None = None  # the divergence guard's reference, once measured

    @classmethod
    def start(cls, config: TrainConfig, parts: Parts, data: Cifar10, out_dir: Path | None,
              resume: bool, verbose: bool) -> RunState:
        """A fresh run, or (with `resume` and a checkpoint in `out_dir`) the one it holds,
        its weights, optimizer and scaler loaded into `parts`."""
        ckpt = Path(out_dir) / CHECKPOINT if out_dir is not None else None
        state = cls(config, config, config.epochs * len(parts.loader),
                    History(config.to_dict(), device_name(parts.device)), ckpt,
                    data_fingerprint(data) if out_dir is not None else None)
        if resume and ckpt is not None and ckpt.is_file():
            state._restore(parts, verbose)
        return state

    def _restore(self, parts: Parts, verbose: bool) -> None:
        saved = load_checkpoint(self.ckpt_path)
        check_resume(saved, self.config, self.fingerprint, self.ckpt_path)
        load_weights(parts.model, saved["model"], self.ckpt_path)
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.scaler.load_state_dict(saved["scaler"])
        if self.config.budget_s is not None:  # finish the schedule planned when the run began
            self.run = dataclasses.replace(self.config, epochs=int(saved["planned_epochs"]))
        self.total_steps = int(saved["planned_steps"])
        self.history = History(self.run.to_dict(), resumed_hardware(saved, self.history.hardware),
                               list(saved["history"]))
        self.epoch = int(saved["epoch"])
        self.start_loss = saved["start_loss"]
        if self.epoch >= self.run.epochs:  # finished: the loaded run's own hardware only
            self.history.hardware = saved["hardware"]
        if self.config.budget_s is not None:  # the plan as the run printed it, from its record
            try:
                plan = History.load(self.ckpt_path.parent / HISTORY).config.get("plan")
            except (OSError, ValueError, KeyError):
                plan = None
            if plan:
                self.history.config["plan"] = plan
        if verbose and self.epoch < self.run.epochs:
            print(f"Resuming from {self.ckpt_path} after epoch {self.epoch}/{self.run.epochs}")
        elif verbose:
            planned = (f"; its time budget planned {self.history.config['plan']}"
                       if "plan" in self.history.config else "")
            print(f"The run in {self.ckpt_path} is finished ({self.epoch} epochs{planned}): "
                  f"loaded it. To train again, {START_OVER}.")

    def adopt(self, plan: Plan, **notes: str) -> None:
        """Train for `plan` from here on: its epochs and steps, recorded in the history."""
        self.run = dataclasses.replace(self.config, epochs=plan.epochs)
        self.total_steps = plan.steps
        self.history.config = {**self.run.to_dict(), "plan": plan.describe(), **notes}

    def epoch_steps(self, steps_per_epoch: int) -> int:
        """Steps of the current epoch: all, but the planned last epoch may stop early."""
        return min(steps_per_epoch, self.total_steps - self.epoch * steps_per_epoch)

    def save(self, parts: Parts, guard: DivergenceGuard) -> None:
        """The checkpoint of the epochs done (atomically) and `history.json`."""
        if self.ckpt_path is None:
            return
        save_checkpoint(self.ckpt_path, {
            "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scaler": parts.scaler.state_dict(), "epoch": self.epoch,
            "config": self.config.to_dict(), "planned_epochs": self.run.epochs,
            "planned_steps": self.total_steps, "history": self.history.epochs,
            "data": self.fingerprint, "start_loss": guard.start, "hardware": self.history.hardware,
        })
        self.history.save(self.ckpt_path.parent / HISTORY)


def resumed_hardware(state: dict[str, Any], here: str) -> str:
    """The hardware a resumed run trained on: the checkpoint's, then (if it differs) `here`,
    the machine that continues it."""
    before = state["hardware"]
    return before if before == here or before.endswith(f"then {here}") else f"{before}, then {here}"
