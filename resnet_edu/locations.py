"""Where files live: the files shipped in the package, the repository checkout, the user cache.

Read-only files ship inside the package as ordinary package data, in `resnet_edu/shipped/`:
the small CIFAR-10 sample (`cifar10-sample/`), the stored results the notebooks plot
(`results/`, written by the scripts in `bench/`) and the small trained nets (`weights/`, see
`resnet_edu.pretrained`). A checkout and an installed wheel read the same folder, next to
this file.

Written files (a CIFAR-10 download, training runs) go to a user-writable folder, never into
the installed package: `data/cifar10/` and `runs/` in a checkout, else the per-user cache
folder `$XDG_CACHE_HOME/resnet-edu/` (`~/.cache/resnet-edu/` when that variable is unset).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED = ("cifar10-sample", "results", "weights")  # the folders in it
RESULTS_DIR = SHIPPED_DIR / "results"  # where the scripts in bench/ write
CACHE_NAME = "resnet-edu"


def checkout_root() -> Path | None:
    """The repository this package is imported from (the editable install `python3 tasks.py`
    makes), or None for an installed wheel: where written files go, not where shipped ones are
    read."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def shipped(name: str) -> Path:
    """The folder of a shipped file set: 'cifar10-sample', 'results' or 'weights'."""
    if name not in SHIPPED:
        raise ValueError(f"name must be one of {list(SHIPPED)}, got {name!r}")
    path = SHIPPED_DIR / name
    if not path.is_dir():
        raise FileNotFoundError(
            f"the {name} files that ship with resnet_edu are missing: expected the folder "
            f"{path}; reinstall the package (or, in a checkout, restore it with git)")
    return path


def results_file(name: str) -> Path:
    """A stored results file by name, e.g. 'degradation_cpu.json'."""
    folder = shipped("results")
    path = folder / name
    if not path.is_file():
        have = sorted(p.name for p in folder.iterdir() if p.is_file())
        raise FileNotFoundError(f"no stored results named {name!r}; expected one of {have}")
    return path


def load_results(name: str) -> Any:
    """A stored results file, parsed: a `.json` file as one object, a `.jsonl` file as a
    list of its lines' objects."""
    text = results_file(name).read_text()
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def device_results_file(stem: str, device: str) -> Path:
    """Where a benchmark measured on `device` (a `runtime.device_name`, e.g. "CPU: AMD EPYC")
    stores its results: `<stem>_cpu.json` or `<stem>_gpu.json` in `RESULTS_DIR`, so a GPU run
    never replaces the CPU figures."""
    return RESULTS_DIR / f"{stem}_{'cpu' if device.startswith('CPU') else 'gpu'}.json"


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/resnet-edu`, or `~/.cache/resnet-edu` (XDG base-directory rules: a
    relative `XDG_CACHE_HOME` is ignored)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / CACHE_NAME


def default_data_dir() -> Path:
    """Where CIFAR-10 is looked for (after `data_dir=` and `$RESNET_EDU_DATA`) and
    downloaded to: `data/cifar10/` in a checkout, else `<user cache>/cifar10/`."""
    root = checkout_root()
    return root / "data" / "cifar10" if root is not None else user_cache_dir() / "cifar10"


def run_dir(name: str) -> Path:
    """The folder for training run `name` (checkpoint, history): `runs/<name>` in a checkout,
    else `<user cache>/runs/<name>`. Inside a checkout the path is given relative to the
    working directory when that is in the checkout too (notebooks/: `../runs/<name>`), so
    messages that show it stay short."""
    if not name or Path(name).name != name:
        raise ValueError(f"name must be a plain folder name, got {name!r}")
    root = checkout_root()
    if root is None:
        return user_cache_dir() / "runs" / name
    path = root / "runs" / name
    cwd = Path.cwd().resolve()
    return Path(os.path.relpath(path, cwd)) if cwd.is_relative_to(root) else path
