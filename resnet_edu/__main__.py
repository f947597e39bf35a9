"""Command line: train a preset, evaluate a checkpoint, download CIFAR-10.

    python -m resnet_edu train --preset cpu --data-dir DIR --out runs/cpu
    python -m resnet_edu evaluate runs/cpu/checkpoint.pt --data-dir DIR
    python -m resnet_edu download [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .train import PRESETS


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder holding cifar-10-batches-py/ (or that folder itself); default: "
                        "$RESNET_EDU_DATA, else data/cifar10/ in the repository")
    p.add_argument("--sample", action="store_true",
                   help="use the small sample shipped in data/cifar10-sample/ instead")
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10 with torchvision if it is not found")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_edu",
        description="Train and evaluate ResNet-18 on CIFAR-10 (the resnet-edu trainer).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a preset; writes history.json and checkpoint.pt",
                       description="Train ResNet-18 (CIFAR stem) with a named recipe. Resumes "
                                   "from OUT/checkpoint.pt if it exists.")
    t.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="the recipe: gpu (width 64, mixed precision), cpu (width 16, progressive "
                        "resizing, for a laptop CPU) or smoke (seconds); default: cpu")
    _data_args(t)
    t.add_argument("--out", required=True, help="output folder for checkpoint.pt, history.json "
                                                "and final.json")
    t.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    t.add_argument("--seed", type=int, default=None, help="override the preset's seed (0)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--no-resume", action="store_true",
                   help="start from scratch even if OUT/checkpoint.pt exists (overwrites it)")
    t.add_argument("--device", default=None,
                   help="cuda, mps or cpu; default: CUDA if present, else MPS, else CPU")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="report test accuracy of a checkpoint",
                       description="Load a checkpoint written by `train` and report loss, "
                                   "accuracy and flip-TTA accuracy on the test set.")
    e.add_argument("checkpoint", help="path to a checkpoint.pt written by `train`")
    _data_args(e)
    e.add_argument("--split", choices=("test", "val"), default="test",
                   help="which split to evaluate (default: test)")
    e.add_argument("--device", default=None, help="cuda, mps or cpu; default: auto")

    d = sub.add_parser("download", help="download CIFAR-10 (170 MB) with torchvision",
                       description="Download CIFAR-10 into DIR (default: data/cifar10/).")
    d.add_argument("--data-dir", default=None, help="where to put it (default: data/cifar10/)")
    return parser


def _load(args: argparse.Namespace):
    from .data import load_cifar10, load_sample

    return load_sample() if args.sample else load_cifar10(args.data_dir, args.download)


def _device(name: str | None):
    import torch

    from .runtime import default_device

    return torch.device(name) if name else default_device()


def train(args: argparse.Namespace) -> int:
    import time

    from .runtime import seed_everything
    from .train import build_model, evaluate, fit, preset

    changes = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    if args.compile:
        changes["compile"] = True
    config = preset(args.preset, **changes)
    device = _device(args.device)
    t0 = time.perf_counter()
    data = _load(args)
    load_time = time.perf_counter() - t0
    print(f"data: {len(data.train)} train, {len(data.val)} val, {len(data.test)} test images "
          f"from {data.source} ({load_time:.1f} s)")
    seed_everything(config.seed)
    model = build_model(config)
    history = fit(model, data, config, out_dir=args.out, device=device,
                  resume=not args.no_resume, progress=not args.no_progress)
    test = evaluate(model, data.test, device=device, tta=True, channels_last=config.channels_last,
                    amp=config.amp)
    final = {"preset": config.name, "hardware": history.hardware,
             "data_load_s": round(load_time, 2),
             "train_time_s": round(history.last.get("train_time_s", 0.0), 1),
             "test_acc": round(test["acc"], 4), "test_acc_tta": round(test["acc_tta"], 4)}
    Path(args.out, "final.json").write_text(json.dumps(final, indent=1))
    print(json.dumps(final))
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from .train import TrainConfig, build_model, evaluate, load_checkpoint

    state = load_checkpoint(args.checkpoint)
    config = TrainConfig(**state["config"])
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise SystemExit(f"{args.checkpoint} does not hold a ResNet-18 of width "
                         f"{config.width} as `train` writes it: {e}") from e
    data = _load(args)
    split = getattr(data, args.split)
    result = evaluate(model, split, device=_device(args.device), tta=True)
    result = {"checkpoint": str(args.checkpoint), "epoch": int(state["epoch"]),
              "split": args.split, "images": len(split),
              **{k: round(v, 4) for k, v in result.items()}}
    print(json.dumps(result))
    return 0


def download(args: argparse.Namespace) -> int:
    from .data import DEFAULT_DIR, find_cifar10

    path = find_cifar10(args.data_dir or DEFAULT_DIR, download=True)
    print(f"CIFAR-10 is in {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .data import DatasetError

    try:
        if args.command == "train":
            return train(args)
        if args.command == "evaluate":
            return evaluate_cmd(args)
        return download(args)
    except (DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
