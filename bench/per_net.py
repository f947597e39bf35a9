"""Measurements of the shipped trained nets, one net at a time, each stored as soon as it is done.

    add_arguments(parser, "landscapes")              # --weights-dir and --out-dir
    check_weights(parser, names, weights_dir)        # before any work: every net's weights
    runs, results = output_roots(args, "landscapes")
    nets = measure_each(names, runs, settings, command, weights_dir, measure, report)
    write_results(results, "landscapes.json", experiment, command, settings, nets, paper, guard)

A long measurement (`bench/landscapes.py`, `bench/ensembles.py`) stores each net's result in
`<folder>/<net>.json`, written atomically, so running the same command again continues where
it stopped. A stored result is reused only when it was made with the same settings and the
same weights (their sha256): new weights or settings measure again.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resnet_edu.locations import SHIPPED_DIR
from resnet_edu.pretrained import manifest, sha256
from resnet_edu.runtime import cpu_description, environment_report


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options every such script has: where the weights come from, where it writes."""
    parser.add_argument("--weights-dir", default=None,
                        help="read <net>.pt state_dicts from here instead of the shipped weights")
    parser.add_argument("--out-dir", default=None,
                        help="where runs/ and results/ are written (default: runs/ of the "
                             "repository and results/ in resnet_edu/shipped/; with --quick, "
                             f"runs/{name}-quick/, so a check never replaces the stored results)")


def output_roots(args: argparse.Namespace, name: str) -> tuple[Path, Path | None]:
    """The folder of the per-net results (`<root>/runs/<name>`), and the root of `results/`:
    None for the shipped results, the default of a full run."""
    root = Path(args.out_dir or (f"runs/{name}-quick" if args.quick else "."))
    return root / "runs" / name, root if (args.out_dir or args.quick) else None


def weights_sha256(name: str, weights_dir: str | None) -> str:
    """The sha256 of the weights a net is measured with: the shipped ones, or
    `<weights_dir>/<name>.pt`."""
    if weights_dir is None:
        return manifest()[name]["sha256"]
    return sha256(Path(weights_dir) / f"{name}.pt")


def check_weights(parser: argparse.ArgumentParser, names: Sequence[str],
                  weights_dir: str | None) -> None:
    """Stop with a parser error, before any work, when a net's weights are not there."""
    for name in names:
        if weights_dir is None and name not in manifest():
            parser.error(f"no shipped weights for {name} in this version (shipped: "
                         f"{sorted(manifest())}): run bench/train_family.py ship first, or "
                         f"leave {name} out with --nets")
        if weights_dir is not None and not (Path(weights_dir) / f"{name}.pt").is_file():
            parser.error(f"--weights-dir {weights_dir} has no {name}.pt")


def measure_each(names: Sequence[str], folder: Path, settings: dict[str, Any], command: str,
                 weights_dir: str | None, measure: Callable[[str], dict[str, Any]],
                 report: Callable[[str, dict[str, Any]], str]) -> dict[str, dict[str, Any]]:
    """Each net's result: the stored one where settings and weights match, else
    `measure(name)` (which must put "weights_sha256" in its result), stored at once. Prints
    `report(name, result)` after each new measurement."""
    folder.mkdir(parents=True, exist_ok=True)
    nets: dict[str, dict[str, Any]] = {}
    for name in names:
        done = folder / f"{name}.json"
        if done.is_file():
            stored = json.loads(done.read_text())
            same_weights = (stored["result"].get("weights_sha256")
                            == weights_sha256(name, weights_dir))
            if stored["settings"] == settings and same_weights:
                print(f"{name}: done before ({done})", flush=True)
                nets[name] = stored["result"]
                continue
            print(f"{name}: {done} has other settings or weights; measuring again", flush=True)
        print(f"--- {name} ---", flush=True)
        nets[name] = measure(name)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": settings, "command": command,
                                   "result": nets[name]}) + "\n")
        os.replace(tmp, done)  # atomic: a stopped run never leaves half a file
        print(report(name, nets[name]), flush=True)
    return nets


def write_results(out: Path | None, filename: str, experiment: str, command: str,
                  settings: dict[str, Any], nets: dict[str, Any], paper: str, guard: Any) -> Path:
    """`results/<filename>` under `out`, or in the shipped results when `out` is None: the
    settings, each net's result, the hardware, torch, the paper's figures and the load."""
    result = {
        "experiment": experiment, "command": command, "settings": settings,
        "hardware": {"cpu": cpu_description(), "cores": os.cpu_count()},
        "torch": environment_report()["torch"], "paper": paper, "nets": nets,
        "machine_load": guard.report(allow_busy=True),
    }
    target = (out or SHIPPED_DIR) / "results" / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {target}")
    return target
