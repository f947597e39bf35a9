"""Our `cpu` preset and the classic recipe students copy, side by side, same budget, one run.

    python bench/peer.py --data-dir data/cifar10 [--budget 10m] [--seed 0]

First our command exactly as a user types it, `python -m resnet_edu train --preset cpu`,
timed from outside (Python's start-up, data loading, training and the final test evaluation
all count). Right after it, on the same machine, the classic recipe of kuangliu/pytorch-cifar
(the one most CIFAR-10 tutorials copy) on the same width-16 ResNet-18 and the same 45,000
training images, with the same budget:

- a `DataLoader` (batch 128, shuffled, 2 workers) over PIL images with torchvision's
  `RandomCrop(32, padding=4)`, `RandomHorizontalFlip`, `ToTensor`, `Normalize`;
- SGD, lr 0.1, momentum 0.9, weight decay 5e-4 on every parameter, cross-entropy;
- cosine annealing over the run (kuangliu's T_max is 200 epochs; a budget gives fewer, so
  the schedule spans the epochs that fit, measured from 30 timed steps after 5 warm-up
  steps, with the test evaluation at the end counted in);
- float32, contiguous memory, no label smoothing, no test-time augmentation.

Both runs go in one JSON, `peer_<device>.json` in `resnet_edu/shipped/results/`, with their
accuracies, wall times, images per second and the ratio, the hardware (CPU model and bf16
support), the commands and the machine's load (`idle.LoadGuard`: no JSON when another program
used the CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import LoadGuard

from resnet_edu.budget import parse_budget
from resnet_edu.data import ImageSet, load_cifar10
from resnet_edu.locations import device_results_file
from resnet_edu.recipe import build_model, preset
from resnet_edu.runtime import cpu_description, device_name, environment_report

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # kuangliu's constants


class PilImages(Dataset):
    """An ImageSet seen as torchvision's CIFAR10 dataset shows it: PIL images, transformed."""

    def __init__(self, images: ImageSet, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        array = self.images.images[i].permute(1, 2, 0).numpy()  # (32, 32, 3) uint8
        return self.transform(Image.fromarray(array)), int(self.images.labels[i])


def classic(args: argparse.Namespace) -> dict:
    """The classic recipe with a time budget; returns its figures."""
    import torchvision.transforms as T

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    data = load_cifar10(args.data_dir)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(MEAN, STD)])
    test_tf = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    loader = DataLoader(PilImages(data.train, train_tf), batch_size=128, shuffle=True,
                        num_workers=2)
    test_loader = DataLoader(PilImages(data.test, test_tf), batch_size=100, num_workers=2)
    model = build_model(preset("cpu"))  # the same width-16 ResNet-18 as ours
    criterion = nn.CrossEntropyLoss()

    def sgd(m: nn.Module) -> torch.optim.SGD:
        return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    # how many epochs fit: 30 timed steps on a throwaway copy, after 5 warm-up steps
    probe = copy.deepcopy(model)
    probe_opt = sgd(probe)
    batches = (batch for _ in range(35) for batch in loader)  # more than one epoch if small
    for i in range(35):
        if i == 5:
            t0 = time.perf_counter()
        x, y = next(batches)
        probe_opt.zero_grad()
        criterion(probe(x), y).backward()
        probe_opt.step()
    step_s = (time.perf_counter() - t0) / 30
    del probe, probe_opt, batches
    test_s = step_s * len(test_loader) * 100 / 128 / 3  # a forward pass: about 1/3 of a step
    left = args.budget_s - (time.perf_counter() - start) - test_s
    epochs = max(1, math.floor(left / (step_s * len(loader))))
    optimizer = sgd(model)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    train_start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        scheduler.step()
    train_s = time.perf_counter() - train_start
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return {"recipe": "classic (kuangliu/pytorch-cifar)", "epochs": epochs,
            "test_acc": round(correct / len(data.test), 4),
            "images_per_s": round(epochs * len(data.train) / train_s, 1),
            "planned_from_step_s": round(step_s, 4)}


def ours(args: argparse.Namespace, run_dir: Path) -> tuple[dict, str]:
    command = [sys.executable, "-m", "resnet_edu", "train", "--preset", "cpu", "--out",
               str(run_dir), "--no-resume", "--no-progress", "--budget", args.budget,
               "--seed", str(args.seed)] + (["--data-dir", args.data_dir] if args.data_dir
                                             else [])
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    final = json.loads(done.stdout.strip().splitlines()[-1])
    history = json.loads((run_dir / "history.json").read_text())
    seen = sum(e["images_per_s"] * e["epoch_time_s"] for e in history["epochs"])
    train_s = sum(e["epoch_time_s"] for e in history["epochs"])
    shown = " ".join(["python", *command[1:]]).replace(str(run_dir), "RUN")
    return {"recipe": "ours (`cpu` preset)", "epochs": len(history["epochs"]),
            "plan": history["config"].get("plan"), "test_acc": final["test_acc"],
            "test_acc_tta": final["test_acc_tta"], "wall_s": round(wall, 1),
            "images_per_s": round(seen / train_s, 1)}, shown


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
    p.add_argument("--budget", default="10m", help="the same budget for both, e.g. 10m, 180s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default="runs/peer", help="our run's checkpoint and history")
    p.add_argument("--out", default=None,
                   help="default: peer_<device>.json in resnet_edu/shipped/results/")
    p.add_argument("--allow-busy", action="store_true",
                   help="write the JSON even if other programs used the CPU (it says so)")
    p.add_argument("--classic-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.budget_s = parse_budget("--budget", args.budget)
    if args.classic_only:  # the child process: one JSON line
        t0 = time.perf_counter()
        result = classic(args)
        print(json.dumps({**result, "wall_s": round(time.perf_counter() - t0, 1)}))
        return 0
    with LoadGuard() as guard:
        mine, my_command = ours(args, Path(args.run_dir))
        print(json.dumps(mine), flush=True)
        t0 = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, "--classic-only", "--budget",
                                args.budget, "--seed", str(args.seed)]
                               + (["--data-dir", args.data_dir] if args.data_dir else []),
                               capture_output=True, text=True, check=True)
        theirs = json.loads(child.stdout.strip().splitlines()[-1])
        theirs["wall_s"] = round(time.perf_counter() - t0, 1)  # start-up included, as ours
        print(json.dumps(theirs), flush=True)
    guard.check(args.allow_busy)
    env = environment_report()
    device = device_name()
    result = {
        "experiment": "our cpu preset against the classic recipe, same net, budget, machine",
        "command": "python bench/peer.py " + " ".join(sys.argv[1:]),
        "our_command": my_command, "budget_s": args.budget_s, "seed": args.seed,
        "hardware": {"device": device, "cpu": cpu_description(), "cores": os.cpu_count()},
        "torch": env["torch"], "ours": mine, "classic": theirs,
        "images_per_s_ratio": round(mine["images_per_s"] / theirs["images_per_s"], 2),
        "machine_load": guard.report(args.allow_busy),
    }
    out = Path(args.out) if args.out else device_results_file("peer", device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"ours {mine['test_acc']:.4f} in {mine['wall_s']:.0f} s, classic "
          f"{theirs['test_acc']:.4f} in {theirs['wall_s']:.0f} s, images/s ratio "
          f"{result['images_per_s_ratio']}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
