"""What each ingredient of the `cpu` preset buys at a short budget: the full recipe, and the
full recipe minus one ingredient at a time.

    python bench/ablations.py --data-dir data/cifar10 [--budget 3m] [--seeds 0 1]

Every variant trains the preset's width-16 ResNet-18 with `fit` and the same time budget
(planned by `resnet_edu.budget`, so a variant that is slower per step gets fewer steps: the
budget is what a user has) and is judged on the validation split; the test set is not
touched. The variants:

- `full`: the preset as it is;
- `no label smoothing`: label_smoothing 0;
- `decay BN and biases`: weight decay on every parameter (Bag of Tricks' "no bias decay" off);
- `no zero-init`: the last BN of each block starts at 1, not 0;
- `no warm-up`: warmup 0;
- `no crop`: padding 0, so no random crop;
- `no flip`: no random horizontal flip;
- `no progressive resizing`: every epoch at 32 pixels;
- `float32`: autocast off, on CPUs with native bf16 only (elsewhere the full recipe already
  trains in float32, so that row would repeat `full`).

Flip test-time augmentation needs no run of its own: each run's validation accuracy is
stored with and without it. Keeping the data on the device against a `DataLoader` is not a
switch of `fit`; notebook 04's section 2 times the two loaders, and `bench/peer.py` runs the
classic `DataLoader` recipe whole.

Writes `ablations_<device>.json` in `resnet_edu/shipped/results/` (per variant and seed:
validation accuracy with and without TTA, epochs, seconds), with the hardware, command and the
machine's load (`idle.LoadGuard`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import LoadGuard

from resnet_edu.budget import parse_budget
from resnet_edu.data import load_cifar10
from resnet_edu.locations import device_results_file
from resnet_edu.precision import resolve_amp
from resnet_edu.recipe import build_model, preset
from resnet_edu.runtime import cpu_description, device_name, environment_report, seed_everything
from resnet_edu.train import fit

VARIANTS: dict[str, dict[str, object]] = {
    "full": {},
    "no label smoothing": {"label_smoothing": 0.0},
    "decay BN and biases": {"decay_norm_and_bias": True},
    "no zero-init": {"zero_init_residual": False},
    "no warm-up": {"warmup": 0.0},
    "no crop": {"padding": 0},
    "no flip": {"flip": False},
    "no progressive resizing": {"min_resolution": 32},
    "float32": {"amp": "off"},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
    p.add_argument("--budget", default="3m", help="each run's time budget, e.g. 3m, 180s")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), default=None)
    p.add_argument("--train-subset", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None,
                   help="default: ablations_<device>.json in resnet_edu/shipped/results/")
    p.add_argument("--allow-busy", action="store_true",
                   help="write the JSON even if other programs used the CPU (it says so)")
    args = p.parse_args()
    budget_s = parse_budget("--budget", args.budget)
    data = load_cifar10(args.data_dir)
    base = preset("cpu", budget_s=budget_s, train_subset=args.train_subset)
    native = resolve_amp("auto", torch.device("cpu")) is not None
    names = [n for n in (args.only or VARIANTS) if n != "float32" or native]
    runs: dict[str, list[dict]] = {}
    with LoadGuard() as guard:
        for name in names:
            for seed in args.seeds:
                config = dataclasses.replace(base, seed=seed, **VARIANTS[name])
                seed_everything(seed)
                t0 = time.perf_counter()
                history = fit(build_model(config), data, config, progress=False,
                              verbose=False)
                last = history.last
                runs.setdefault(name, []).append({
                    "seed": seed, "val_acc": round(last["val_acc"], 4),
                    "val_acc_tta": round(last["val_acc_tta"], 4),
                    "epochs": len(history.epochs), "seconds": round(time.perf_counter() - t0, 1)})
                print(name, json.dumps(runs[name][-1]), flush=True)
    guard.check(args.allow_busy)
    device = device_name()
    result = {"experiment": "the cpu preset minus one ingredient at a time, at a short budget",
              "command": "python bench/ablations.py " + " ".join(sys.argv[1:]),
              "budget_s": budget_s, "seeds": args.seeds, "split": "validation",
              "hardware": {"device": device, "cpu": cpu_description(), "cores": os.cpu_count()},
              "torch": environment_report()["torch"], "base": base.to_dict(),
              "variants": {n: VARIANTS[n] for n in names}, "runs": runs,
              "not_run": {"float32": "the CPU has no native bf16: the full recipe trains in "
                                     "float32 already"} if not native else {},
              "machine_load": guard.report(args.allow_busy)}
    out = Path(args.out) if args.out else device_results_file("ablations", device)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
