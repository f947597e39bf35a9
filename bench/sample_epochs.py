"""How many epochs the shipped sample is worth: the `cpu` preset on it for a few fixed lengths.

    python bench/sample_epochs.py [--epochs 10 20 40]

Without the full data set, notebook 04 trains on the sample shipped with the package (1,800
training and 200 validation images). A 10-minute budget there buys hundreds of epochs that
only memorise those images. This trains the `cpu` preset (no budget) for each length, and
`resnet_edu.recipe.SAMPLE_EPOCHS` is the shortest whose validation accuracy is within one
standard error of the best (with 200 validation images that error is about 3.5 points, so
finer differences are noise): the choice is made on the validation split, never on the test
images.
Writes `resnet_edu/shipped/results/sample_epochs.json` (accuracies, seconds, hardware, command,
load).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import LoadGuard

from resnet_edu.data import load_sample
from resnet_edu.locations import RESULTS_DIR
from resnet_edu.recipe import build_model, preset
from resnet_edu.runtime import cpu_description, environment_report, seed_everything
from resnet_edu.train import fit


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--out", default=str(RESULTS_DIR / "sample_epochs.json"))
    p.add_argument("--allow-busy", action="store_true",
                   help="write the JSON even if other programs used the CPU (it says so)")
    args = p.parse_args()
    data = load_sample()
    runs = []
    with LoadGuard() as guard:
        for epochs in args.epochs:
            config = preset("cpu", epochs=epochs, budget_s=None)
            seed_everything(config.seed)
            model = build_model(config)
            t0 = time.perf_counter()
            history = fit(model, data, config, progress=False, verbose=False)
            runs.append({"epochs": epochs, "val_acc": round(history.last["val_acc"], 4),
                         "train_acc": round(history.last["train_acc"], 4),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(runs[-1]), flush=True)
    guard.check(args.allow_busy)
    best = max(r["val_acc"] for r in runs)
    error = math.sqrt(best * (1 - best) / len(data.val))  # binomial standard error
    chosen = min(r["epochs"] for r in runs if r["val_acc"] >= best - error)
    result = {"experiment": "the cpu preset on the shipped sample, fixed epochs",
              "command": "python bench/sample_epochs.py " + " ".join(sys.argv[1:]),
              "data": f"sample: {len(data.train):,} train, {len(data.val):,} val images",
              "hardware": {"cpu": cpu_description(), "cores": os.cpu_count()},
              "torch": environment_report()["torch"], "runs": runs, "chosen_epochs": chosen,
              "rule": "the shortest run within one standard error of the best validation "
                      f"accuracy (sqrt(p(1-p)/n) = {100 * error:.1f} points)",
              "machine_load": guard.report(args.allow_busy)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"chosen: {chosen} epochs; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
