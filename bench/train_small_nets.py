"""Train the small CIFAR nets notebook 06 ships, and write their weights and results.

    python bench/train_small_nets.py --data-dir data/cifar10 --nets resnet20 --threads 1

(one process per net, `--nets`, so that several can run side by side; they share the output
files, which each process updates under a lock).

Trains ResNet-20, plain-20 and pre-activation ResNet-20 (He et al. 2015 Sec. 4.2, and He et
al. 2016) with one recipe: the paper's SGD (momentum 0.9, weight decay 1e-4, batch 128, peak
lr 0.1, crop + flip), on a short warm-up + cosine schedule so that a few epochs end at a
small learning rate, in float32 (`--amp off`: bf16 autocast is far slower on CPUs without
native bf16). The shipped run is short: 3 epochs on the first 15,000 training images, which
took a few minutes per net on a shared 2-core CPU. It writes

- `weights/<name>.pt`: the fp16 state_dict of each net (1 MB or less each);
- `weights/manifest.json`: per file, the sha256, the builder call, the parameter count and a
  "how it was made" line (command, hardware, time, accuracy), which `resnet_edu.pretrained`
  checks when it loads a file;
- `results/small_nets.json`: the command, hardware, per-epoch history, time, and val / test
  accuracy of each net, and the accuracy of the fp16 weights on the shipped sample (the
  tests assert it).

Validation accuracy is reported after every epoch (and chose nothing: the recipe is the
paper's); test accuracy is measured once, on the fp16 weights, after training.
`--quick` trains for seconds on the shipped sample and writes into `--out-dir` (a check of
the script, not weights to ship).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_family import fp16_state_dict, sha256  # the family's script ships the same way

from resnet_edu.data import load_cifar10, load_sample
from resnet_edu.evaluation import evaluate
from resnet_edu.locations import SHIPPED_DIR
from resnet_edu.models import count_parameters
from resnet_edu.pretrained import NETS, build, small_nets_recipe
from resnet_edu.runtime import default_device, environment_report, seed_everything
from resnet_edu.train import fit

# He et al. 2015, Table 6 (CIFAR-10 test error, %, 164 epochs): of our three nets, only
# ResNet-20 has a number there to set beside ours
PAPER_TEST_ERROR = {"resnet20": 8.75, "plain20": None, "preact20": None}
PAPER_NOTE = ("He et al. 2015 Table 6: ResNet-20 8.75 % test error after 164 epochs; "
              "plain-20 appears only in Fig. 6 (left), not in the table")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=15000,
                   help="train on the first N images of the training split (0: all 45,000)")
    p.add_argument("--amp", default="off", help="mixed precision: off, auto, bf16, fp16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--out-dir", default=None,
                   help="writes weights/ and results/ under it (default: resnet_edu/shipped/)")
    p.add_argument("--quick", action="store_true", help="seconds, on the shipped sample")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/train_small_nets.py",
                                                             *(argv or sys.argv[1:])])
    data = load_sample() if args.quick else load_cifar10(args.data_dir)
    sample = load_sample()
    config = small_nets_recipe(2 if args.quick else args.epochs,
                               256 if args.quick else (args.train_subset or None), args.amp)
    device = default_device()
    env = environment_report()
    hardware = (f"{env['device_name']} on a machine with {os.cpu_count()} CPU cores"
                if device.type == "cpu" else env["device_name"])
    out = Path(args.out_dir) if args.out_dir else SHIPPED_DIR
    (out / "weights").mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    results_path = out / "results" / "small_nets.json"
    manifest_path = out / "weights" / "manifest.json"
    n_train = len(data.train) if config.train_subset is None else min(config.train_subset,
                                                                       len(data.train))
    for name in args.nets:
        seed_everything(config.seed)
        model = build(name)
        t0 = time.perf_counter()
        history = fit(model, data, config, device=device, eval_splits=("val",),
                      progress=False, verbose=True)
        seconds = time.perf_counter() - t0
        path = out / "weights" / f"{name}.pt"
        torch.save(fp16_state_dict(model), path)
        # what a user gets: the fp16 weights loaded back into a float32 net
        shipped = build(name)
        shipped.load_state_dict(torch.load(path, weights_only=True))
        val = evaluate(shipped, data.val, device=device)["acc"]
        test = evaluate(shipped, data.test, device=device)["acc"]
        sample_acc = evaluate(shipped, sample.test, device=device)["acc"]
        made = (f"{command} ({config.epochs} epochs on {n_train:,} images, "
                f"{seconds / 60:.1f} min on {hardware}, torch {env['torch']}): "
                f"val {100 * val:.2f} %, test {100 * test:.2f} %")
        entry = {
            "command": command, "builder": NETS[name], "parameters": count_parameters(model),
            "train_time_s": round(seconds, 1),
            "epoch_time_s": [round(e["epoch_time_s"], 1) for e in history.epochs],
            "val_acc_per_epoch": [round(e["val_acc"], 4) for e in history.epochs],
            "train_acc_per_epoch": [round(e["train_acc"], 4) for e in history.epochs],
            "val_acc": round(val, 4), "test_acc_fp16": round(test, 4),
            "sample_test_acc_fp16": round(sample_acc, 4),
            "paper_test_error_percent": PAPER_TEST_ERROR[name],
        }
        print(f"{name}: {seconds:.0f} s, val {val:.4f}, test {test:.4f}, sample {sample_acc:.4f}",
              flush=True)
        # several processes (one per net) update the two files: one at a time, under a lock
        with open(out / "results" / ".small_nets.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            results = json.loads(results_path.read_text()) if results_path.is_file() else {}
            manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
            results.setdefault("nets", {})[name] = entry
            results.update({
                "experiment": "the small CIFAR nets of notebook 06 (paths, lesions, "
                              "pre-activation)",
                "hardware": hardware, "environment": env,
                "data": {"train_images": n_train, "val_images": len(data.val),
                         "test_images": len(data.test),
                         "source": "sample" if args.quick else "CIFAR-10 (JPEG copy)"},
                "config": config.to_dict(), "paper_note": PAPER_NOTE,
                "train_acc_note": "running accuracy on the augmented training batches",
            })
            manifest[name] = {"file": path.name, "sha256": sha256(path),
                              "builder": NETS[name], "parameters": count_parameters(model),
                              "how_made": made}
            results_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {results_path} and {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
