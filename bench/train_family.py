"""Train the family of small CIFAR-10 nets the series measures, and ship their weights.

    python bench/train_family.py train --data-dir data/cifar10          # resumable, hours on a CPU
    python bench/train_family.py ship                                   # once all five are done

One recipe, one protocol, the same number of epochs for every net (He et al. 2015, Sec. 4.2
and Fig. 6; He et al. 2016 for the pre-activation block):

- plain-20, ResNet-20, pre-activation ResNet-20, plain-56 and ResNet-56 (option-A shortcuts);
- all 45,000 training images (5,000 are held out for validation), crop + flip;
- `family_recipe` (resnet_edu.pretrained): the package's one-cycle SGD, float32 everywhere
  (the same numbers on every machine, so a run can be resumed on another), no label
  smoothing (it would raise every net's training loss and blur the train-error comparison
  the degradation rests on);
- after every epoch: the training error measured in eval mode on a fixed subset of 10,000
  training images (not the running error on augmented batches, which mixes in the
  augmentation and the changing weights), and the validation error; the test error once,
  on the shipped fp16 weights, at the end.

`train` trains the nets one at a time, each in `runs/family/<net>/` (a checkpoint after every
epoch, written atomically; run the same command again to continue where it stopped, on this
machine or another). The recipe was fixed before the run and chose nothing on the test set.

`ship` writes, from the finished runs only:
- `weights/<net>.pt`, the fp16 state_dict, and its entry in `weights/manifest.json` (sha256,
  builder, a "how it was made" line), which `resnet_edu.pretrained.load_pretrained` checks;
- `results/family.json`: per net and epoch the train-subset, validation and running errors,
  the test error of the shipped weights, their accuracy on the shipped sample (asserted by
  the tests), the hardware, the commands and the load average around each net's training.

`--quick` trains two short epochs on the shipped sample into `--out-dir` (a check of the
script, not weights to ship).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from resnet_edu.checkpoints import load_checkpoint
from resnet_edu.data import load_cifar10, load_sample
from resnet_edu.evaluation import evaluate
from resnet_edu.locations import SHIPPED_DIR
from resnet_edu.models import count_parameters
from resnet_edu.pretrained import FAMILY, build, family_recipe, initial, sha256
from resnet_edu.runtime import environment_report
from resnet_edu.train import TrainingDiverged, fit

TRAIN_SUBSET = 10_000  # the fixed training images whose error is measured in eval mode
LOADS = "loadavg.jsonl"  # per run folder: os.getloadavg() before and after each session

# He et al. 2015, Table 6 (CIFAR-10 test error, %, 164 epochs); the plain nets appear only in
# Fig. 6 (left), as curves; He et al. 2016 (Table 2 / Fig. 6) for pre-activation ResNets
PAPER_TEST_ERROR = {"resnet20": 8.75, "resnet56": 6.97, "plain20": None, "plain56": None,
                    "preact20": None}
PAPER_NOTE = ("He et al. 2015 Table 6: ResNet-20 8.75 %, ResNet-56 6.97 % test error after "
              "64k iterations (164 epochs); plain-20 and plain-56 appear only as curves in "
              "Fig. 6 (left), where plain-56 has the higher training and test error")


def fp16_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with floating-point tensors stored as fp16 (half the bytes)."""
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
            for k, v in model.state_dict().items()}


def command_line(argv: list[str]) -> str:
    return "python " + " ".join(shlex.quote(a) for a in ["bench/train_family.py", *argv])


def train(args: argparse.Namespace, argv: list[str]) -> int:
    data = load_sample() if args.quick else load_cifar10(args.data_dir)
    config = family_recipe(2 if args.quick else args.epochs)
    if args.quick:
        # two steps per epoch: a gentler rate than the real run's warm-up gives
        config = dataclasses.replace(config, train_subset=256, lr=0.02)
    fixed = data.train.subset(slice(0, 500 if args.quick else TRAIN_SUBSET))
    status = 0
    for name in args.nets:
        folder = Path(args.out_dir or ".") / "runs" / "family" / name
        folder.mkdir(parents=True, exist_ok=True)
        model = initial(name, config.seed)  # seeded: the same start on every machine
        before = os.getloadavg()
        t0 = time.time()
        print(f"--- {name}: {config.epochs} epochs ---", flush=True)
        try:
            fit(model, data, config, out_dir=folder, eval_splits=("val",),
                eval_sets={"train_fixed": fixed}, progress=False, verbose=True)
        except TrainingDiverged as e:  # a result too; the other nets still train
            print(f"{name}: {e}", flush=True)
            status = 1
        finally:  # the load around this session's training, also when it was stopped
            record_load(folder, argv, t0, before)
    return status


def record_load(folder: Path, argv: list[str], t0: float, before: tuple[float, ...]) -> None:
    """Append this session's command, seconds, load average and epochs done to the run's
    LOADS file (the epochs from the last checkpoint: a stopped session counts what it saved)."""
    checkpoint = folder / "checkpoint.pt"
    done = load_checkpoint(checkpoint)["epoch"] if checkpoint.is_file() else 0
    with open(folder / LOADS, "a") as f:
        f.write(json.dumps({"command": command_line(argv), "start": t0,
                            "seconds": round(time.time() - t0, 1),
                            "loadavg_before": before, "loadavg_after": os.getloadavg(),
                            "epochs_done": done}) + "\n")


def ship(args: argparse.Namespace, argv: list[str]) -> int:
    data = load_sample() if args.quick else load_cifar10(args.data_dir)
    sample = load_sample()
    out = Path(args.out_dir or ".")
    ship_dir = Path(args.out_dir) if args.out_dir else SHIPPED_DIR  # results/ and weights/
    env = environment_report()
    nets, manifest = {}, {}
    for name in FAMILY:
        folder = out / "runs" / "family" / name
        state = load_checkpoint(folder / "checkpoint.pt")
        epochs = state["config"]["epochs"]
        if state["epoch"] < epochs:
            raise SystemExit(f"{name} has trained {state['epoch']} of {epochs} epochs: run "
                             "`python bench/train_family.py train` to finish it first")
        model = build(name)
        model.load_state_dict(state["model"])
        path = ship_dir / "weights" / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(fp16_state_dict(model), path)
        shipped = build(name)  # what a user gets: the fp16 weights in a float32 net
        shipped.load_state_dict(torch.load(path, weights_only=True))
        test = evaluate(shipped, data.test)
        sample_acc = evaluate(shipped, sample.test)["acc"]
        history = state["history"]
        loads = [json.loads(line) for line in (folder / LOADS).read_text().splitlines()]
        seconds = sum(e["epoch_time_s"] for e in history)
        # the median epoch: a run paused (SIGSTOP) for another job, or resumed later, has a
        # few epochs whose wall time includes the pause
        median = statistics.median(e["epoch_time_s"] for e in history)
        made = (f"{loads[0]['command']} ({epochs} epochs on {len(data.train):,} images, "
                f"{median:.0f} s per epoch (median) on {state['hardware']}, "
                f"torch {env['torch']}): test error {100 * (1 - test['acc']):.2f} %")
        nets[name] = {
            "builder": FAMILY[name], "parameters": count_parameters(model), "epochs": epochs,
            "hardware": state["hardware"], "train_time_s": round(seconds, 1),
            "median_epoch_time_s": round(median, 1),
            "epoch_time_s": [round(e["epoch_time_s"], 1) for e in history],
            "train_error": [round(1 - e["train_fixed_acc"], 4) for e in history],
            "val_error": [round(1 - e["val_acc"], 4) for e in history],
            "running_train_error": [round(1 - e["train_acc"], 4) for e in history],
            "train_loss": [round(e["train_fixed_loss"], 4) for e in history],
            "test_error": round(1 - test["acc"], 4), "test_loss": round(test["loss"], 4),
            "sample_test_acc_fp16": round(sample_acc, 4),
            "paper_test_error_percent": PAPER_TEST_ERROR[name], "sessions": loads,
        }
        manifest[name] = {"file": path.name, "sha256": sha256(path), "builder": FAMILY[name],
                          "parameters": count_parameters(model), "how_made": made}
        print(f"{name}: train error {nets[name]['train_error'][-1]:.4f}, test error "
              f"{nets[name]['test_error']:.4f}, sample acc {sample_acc:.4f}", flush=True)
    results = {
        "experiment": "one family of small CIFAR-10 nets, one recipe, equal epochs "
                      "(notebooks 00, 02, 06 and 07)",
        "commands": [*sorted({s["command"] for n in nets.values() for s in n["sessions"]}),
                     command_line(argv)],
        "environment": env, "config": state["config"],
        "data": {"train_images": len(data.train), "train_error_images": min(
            TRAIN_SUBSET, len(data.train)), "val_images": len(data.val),
            "test_images": len(data.test),
            "source": "sample" if args.quick else "CIFAR-10 (JPEG copy)"},
        "train_error_note": f"error in eval mode on the first {TRAIN_SUBSET:,} training "
                            "images, without augmentation, after each epoch",
        "paper_note": PAPER_NOTE, "nets": nets,
    }
    (ship_dir / "results").mkdir(parents=True, exist_ok=True)
    (ship_dir / "results" / "family.json").write_text(json.dumps(results, indent=1) + "\n")
    (ship_dir / "weights" / "manifest.json").write_text(
        json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {ship_dir / 'results' / 'family.json'} and "
          f"{ship_dir / 'weights' / 'manifest.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("train", "ship"))
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--nets", nargs="+", default=list(FAMILY), choices=list(FAMILY))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out-dir", default=None,
                   help="runs/, weights/ and results/ go under it (default: runs/ of the "
                        "repository, weights/ and results/ in resnet_edu/shipped/)")
    p.add_argument("--quick", action="store_true", help="seconds, on the shipped sample")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return train(args, argv) if args.action == "train" else ship(args, argv)


if __name__ == "__main__":
    sys.exit(main())
