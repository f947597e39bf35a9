"""Command line: train a preset, evaluate a checkpoint, download CIFAR-10.

    python -m resnet_edu train --preset cpu --data-dir DIR --out runs/cpu
    python -m resnet_edu evaluate runs/cpu/checkpoint.pt --data-dir DIR
    python -m resnet_edu download [--data-dir DIR]

Every argument is checked before any work starts. A mistake ends with one line on stderr
that names the option and says what to do, and exit code 2; a diverged training exits
with 1, a Ctrl-C with 130 after saying where the checkpoint is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path


def _seconds_since_start() -> float:
    """How long this process has run (on Linux, from /proc; else 0), so that a time budget
    counts the interpreter's start-up and the imports."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


STARTED = time.perf_counter() - _seconds_since_start()  # the command's start: the budget's

from .recipe import PRESETS  # noqa: E402 (torch's import counts toward the budget)

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """A command-line mistake; the message names the option and says what to do."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and exit code 2, as argparse has)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder holding cifar-10-batches-py/ (or that folder itself); only that "
                        "folder is used when given; default: $RESNET_EDU_DATA, else "
                        "data/cifar10/ in the repository")
    p.add_argument("--sample", action="store_true",
                   help="use the small sample shipped with the package (2,000 training and "
                        "1,000 test images) instead")
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10 with torchvision if it is not found")
    p.add_argument("--val-size", type=int, default=None,
                   help="training images held out for validation; default: a tenth (5,000 of "
                        "CIFAR-10, 200 of the sample)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m resnet_edu",
        description="Train and evaluate ResNet-18 on CIFAR-10 (the resnet-edu trainer).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    t = sub.add_parser("train", help="train a preset; writes history.json and checkpoint.pt",
                       description="Train ResNet-18 (CIFAR stem) with a named recipe. Resumes "
                                   "from OUT/checkpoint.pt if it exists.")
    t.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="the recipe: gpu (width 64, mixed precision), cpu (width 16, progressive "
                        "resizing, for a laptop CPU) or smoke (seconds); default: cpu")
    _data_args(t)
    t.add_argument("--out", required=True, help="output folder for checkpoint.pt, history.json "
                                                "and final.json (one training at a time)")
    t.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    t.add_argument("--budget", default=None, metavar="TIME",
                   help="train to a time budget, e.g. 10m, 90s or 600 (seconds): the epochs "
                        "are planned so that the whole command, data loading and the final "
                        "test evaluation included, ends on time; 'none' trains the preset's "
                        "epochs")
    t.add_argument("--seed", type=int, default=None,
                   help="override the preset's seed (0); from 0 to 2**32 - 1")
    t.add_argument("--lr", type=float, default=None, help="override the preset's peak "
                                                          "learning rate")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="override the preset's weight decay")
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


# --- checks, before any work ---------------------------------------------------------------

# the flag of each argument the recipe and the data loader check (`checks.ArgumentError.name`)
FLAGS = {"epochs": "--epochs", "seed": "--seed", "lr": "--lr", "weight_decay": "--weight-decay",
         "budget_s": "--budget", "val_size": "--val-size"}

_HOW_TO_GET_DATA = ("Point --data-dir at the folder holding cifar-10-batches-py/, add "
                    "--download to fetch it (170 MB), or use --sample for the small sample "
                    "shipped with the package.")


@contextmanager
def _flags():
    """A bad argument found by the library (the recipe, the data loader) is a usage error that
    names the flag, not the Python argument."""
    from .checks import ArgumentError

    try:
        yield
    except ArgumentError as e:
        raise UsageError(str(e.renamed(FLAGS.get(e.name, e.name)))) from None


def _check_data_args(args: argparse.Namespace) -> None:
    from .data import LAYOUT, missing_files

    if args.sample and (args.data_dir is not None or args.download):
        raise UsageError("--sample uses the shipped sample: leave out --data-dir and --download")
    if args.data_dir is not None and not args.download:
        missing = missing_files(args.data_dir)
        if missing:  # no silent fallback to another copy: the user said where the data is
            where = Path(args.data_dir).expanduser()
            found = "no such folder" if not where.exists() else f"missing {', '.join(missing)}"
            raise UsageError(f"--data-dir {args.data_dir}: no complete CIFAR-10 copy there "
                             f"(looked for {LAYOUT}/ in it, or it being one: {found}). "
                             + _HOW_TO_GET_DATA)


def _device(name: str | None):
    from .checks import check_device
    from .runtime import default_device

    if name is None:
        return default_device()
    try:
        return check_device(name, "--device")
    except ValueError as e:
        raise UsageError(str(e)) from None


def _load(args: argparse.Namespace):
    from . import data

    try:
        with _flags():  # a --val-size the data set cannot give
            if args.sample:
                return data.load_sample(**({} if args.val_size is None else
                                           {"val_size": args.val_size}))
            return data.load_cifar10(args.data_dir, args.download, val_size=args.val_size)
    except data.DatasetNotFound as e:  # the command line's advice instead of the Python API's
        raise data.DatasetNotFound(e.problem, e.looked, e.download_error,
                                   _HOW_TO_GET_DATA) from None


# --- the commands --------------------------------------------------------------------------

def train_command(args: argparse.Namespace) -> int:
    from .budget import evaluation_seconds, parse_budget
    from .checkpoints import lock_out_dir, prepare_out_dir
    from .evaluation import evaluate
    from .recipe import build_model, preset
    from .runtime import seed_everything
    from .train import eval_settings, fit

    _check_data_args(args)
    device = _device(args.device)
    changes = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed), ("lr", args.lr),
                                 ("weight_decay", args.weight_decay)) if v is not None}
    if args.budget is not None:
        with _flags():
            changes["budget_s"] = parse_budget("--budget", args.budget)
    elif args.epochs is not None:  # epochs asked for: they win over the preset's budget
        changes["budget_s"] = None
    if args.compile:
        changes["compile"] = True
    with _flags():  # the recipe checks its own fields, once (TrainConfig)
        config = preset(args.preset, **changes)
    out = prepare_out_dir(args.out, name="--out")
    with lock_out_dir(out):  # refused at once if another training writes there
        t0 = time.perf_counter()
        data = _load(args)
        load_time = time.perf_counter() - t0
        print(f"data: {len(data.train)} train, {len(data.val)} val, {len(data.test)} test "
              f"images from {data.source} ({load_time:.1f} s)")
        seed_everything(config.seed)
        model = build_model(config)
        splits = ("val",) if len(data.val) else ()
        reserve = 0.0
        if config.budget_s is not None:  # the final test evaluation comes out of the budget
            reserve = evaluation_seconds(
                lambda batch: evaluate(model, batch, tta=True, **eval_settings(config, device)),
                data.test.subset(slice(0, config.eval_batch_size)), len(data.test))
        history = fit(model, data, config, out_dir=out, device=device, eval_splits=splits,
                      resume=not args.no_resume, progress=not args.no_progress,
                      budget_used_s=time.perf_counter() - STARTED + reserve)
        test = evaluate(model, data.test, tta=True, **eval_settings(config, device))
        final = {"preset": config.name, "hardware": history.hardware,
                 "epochs": history.config["epochs"], "plan": history.config.get("plan"),
                 "data_load_s": round(load_time, 2),
                 "wall_time_s": round(time.perf_counter() - STARTED, 1),
                 "train_time_s": round(history.last.get("train_time_s", 0.0), 1),
                 "test_acc": round(test["acc"], 4), "test_acc_tta": round(test["acc_tta"], 4)}
        Path(out, "final.json").write_text(json.dumps(final, indent=1))
    print(json.dumps(final))
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from .checkpoints import config_from_checkpoint, load_checkpoint, load_weights
    from .evaluation import evaluate
    from .recipe import build_model

    _check_data_args(args)
    device = _device(args.device)
    state = load_checkpoint(args.checkpoint)
    config = config_from_checkpoint(state, args.checkpoint)
    model = build_model(config)
    load_weights(model, state["model"], args.checkpoint)
    data = _load(args)
    split = getattr(data, args.split)
    if len(split) == 0:
        raise UsageError(f"--split {args.split}: the {args.split} split is empty "
                         "(--val-size 0); choose another split or a --val-size above 0")
    result = evaluate(model, split, device=device, tta=True)
    result = {"checkpoint": str(args.checkpoint), "epoch": int(state["epoch"]),
              "split": args.split, "images": len(split),
              **{k: round(v, 4) for k, v in result.items()}}
    print(json.dumps(result))
    return 0


def download_command(args: argparse.Namespace) -> int:
    from .data import DEFAULT_DIR, find_cifar10

    path = find_cifar10(args.data_dir or DEFAULT_DIR, download=True)
    print(f"CIFAR-10 is in {path}")
    return 0


def _interrupted(args: argparse.Namespace) -> int:
    """After Ctrl-C: where the last checkpoint is and how to go on."""
    from .checkpoints import CHECKPOINT, CheckpointError, load_checkpoint

    if args.command != "train":
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    path = Path(args.out) / CHECKPOINT
    try:
        epoch = int(load_checkpoint(path)["epoch"])
    except CheckpointError:
        print(f"\ninterrupted before the first checkpoint: nothing was saved in {args.out}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    again = "the same command again" + (" without --no-resume" if args.no_resume else "")
    print(f"\ninterrupted: the checkpoint of epoch {epoch} is in {path}; to resume, run "
          f"{again}", file=sys.stderr)
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .checkpoints import CheckpointError, OutputDirError
    from .data import DatasetError
    from .train import TrainingDiverged

    try:
        if args.command == "train":
            return train_command(args)
        if args.command == "evaluate":
            return evaluate_command(args)
        return download_command(args)
    except (UsageError, DatasetError, CheckpointError, OutputDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return _interrupted(args)


if __name__ == "__main__":
    sys.exit(main())
