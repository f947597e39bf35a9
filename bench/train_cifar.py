"""Train a preset on CIFAR-10 and write one JSON line of timings and accuracies.

    python bench/train_cifar.py --preset cpu [--data-dir DIR] [--out-json results/bench.jsonl]

The line holds: preset, hardware, data-loading time, wall time to the final epoch (data
loading included, per-epoch test evaluation excluded), the time at which test accuracy first
reached 90/93/94/95% (plain and with flip TTA; null if never), final test accuracy and
training images/s. Test accuracy is measured after every epoch only to draw this curve;
the recipes were chosen on the validation split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import LoadGuard

from resnet_edu.data import load_cifar10
from resnet_edu.models import count_parameters
from resnet_edu.recipe import PRESETS, TrainConfig, build_model, preset
from resnet_edu.runtime import cpu_description, device_name, environment_report, seed_everything
from resnet_edu.train import fit

THRESHOLDS = (0.90, 0.93, 0.94, 0.95)


def time_to(history_epochs: list[dict], key: str, threshold: float, offset: float
            ) -> float | None:
    """Seconds (training time + `offset`) when `key` first reached `threshold`, or None."""
    for e in history_epochs:
        if e.get(key, 0.0) >= threshold:
            return round(e["train_time_s"] + offset, 1)
    return None


def parse_overrides(items: list[str]) -> dict[str, object]:
    """['lr=0.2', 'amp=bf16'] -> {'lr': 0.2, 'amp': 'bf16'}, typed by TrainConfig's fields."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, object] = {}
    for item in items:
        name, _, text = item.partition("=")
        if name not in types or not text:
            raise SystemExit(f"--set expects FIELD=VALUE, FIELD in {sorted(types)}; got {item!r}")
        kind = str(types[name])
        if text == "None":
            changes[name] = None
        elif kind == "bool":
            changes[name] = text.lower() in {"1", "true", "yes"}
        elif kind.startswith("int"):
            changes[name] = int(text)
        elif kind == "float":
            changes[name] = float(text)
        else:
            changes[name] = text
    return changes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--out-json", default=None, help="append the JSON line to this file too")
    p.add_argument("--run-dir", default=None, help="keep checkpoint and history here")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any TrainConfig field, e.g. --set lr=0.2 (repeatable)")
    p.add_argument("--allow-busy", action="store_true",
                   help="write the JSON even if other programs used the CPU (it says so)")
    args = p.parse_args()
    with LoadGuard() as guard:
        line = run(args)
    guard.check(args.allow_busy)
    line["machine_load"] = guard.report(args.allow_busy)
    text = json.dumps(line)
    print(text)
    if args.out_json:
        with open(Path(args.out_json), "a") as f:
            f.write(text + "\n")
    return 0


def run(args: argparse.Namespace) -> dict:
    """Train the preset as `args` say; return the JSON line's figures."""
    t0 = time.perf_counter()
    data = load_cifar10(args.data_dir)
    load_time = time.perf_counter() - t0
    changes = parse_overrides(args.set)
    if args.epochs:  # a fixed epoch count instead of the preset's time budget
        changes["epochs"] = args.epochs
        changes["budget_s"] = None
    config = preset(args.preset, **changes)
    seed_everything(config.seed)
    model = build_model(config)
    history = fit(model, data, config, out_dir=args.run_dir, resume=False,
                  eval_splits=("val", "test"), progress=sys.stderr.isatty(),
                  budget_used_s=time.perf_counter() - t0)  # the budget counts data loading
    epochs = history.epochs
    last = epochs[-1]
    env = environment_report()
    line = {
        "preset": config.name,
        "hardware": f"{device_name()}; {os.cpu_count()} CPUs visible",
        "cpu": cpu_description(),
        "torch": env["torch"],
        "parameters": count_parameters(model),
        "epochs": history.config["epochs"],
        "budget_s": config.budget_s,
        "plan": history.config.get("plan"),
        "data_load_s": round(load_time, 1),
        "wall_time_to_final_epoch_s": round(last["train_time_s"] + load_time, 1),
        "wall_time_incl_eval_s": round(last["wall_time_s"] + load_time, 1),
        **{f"time_to_{round(100 * t)}_s": time_to(epochs, "test_acc", t, load_time)
           for t in THRESHOLDS},
        **{f"time_to_{round(100 * t)}_tta_s": time_to(epochs, "test_acc_tta", t, load_time)
           for t in THRESHOLDS},
        "final_test_acc": round(last["test_acc"], 4),
        "final_test_acc_tta": round(last["test_acc_tta"], 4),
        "final_val_acc": round(last["val_acc"], 4),
        "images_per_s": round(history.images_per_s(), 1),
        "command": " ".join(["python", *sys.argv]),
    }
    return line


if __name__ == "__main__":
    sys.exit(main())
