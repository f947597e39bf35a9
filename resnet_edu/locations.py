"""Where files live: the repository checkout, the files shipped in the package, the user cache.

Read-only files, one source each: the small CIFAR-10 sample (`data/cifar10-sample/`), the
stored results the notebooks plot (`results/`) and the small trained nets (`weights/`, see
`resnet_edu.pretrained`) sit at the top of the repository. In a
checkout (the editable install `python3 tasks.py` makes) they are read from there. A built
wheel carries copies in `resnet_edu/_shipped/`, which the build step in `setup.py` makes,
and `importlib.resources` finds them from any working directory (Colab, `pip install`).

Written files (a CIFAR-10 download, training runs) go to a user-writable folder, never into
the installed package: `data/cifar10/` and `runs/` in a checkout, else the per-user cache
folder `$XDG_CACHE_HOME/resnet-edu/` (`~/.cache/resnet-edu/` when that variable is unset).

This module uses only the standard library, so `setup.py` can read `SHIPPED` from it.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

PACKAGE = "resnet_edu"
SHIPPED_DIR = "_shipped"  # the folder inside the installed package
# shipped name -> its source folder in the repository, and the files of it that ship
SHIPPED: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10-sample": ("data/cifar10-sample", ("cifar-10-batches-py/*",)),
    "results": ("results", ("*.json", "*.jsonl")),
    "weights": ("weights", ("*.pt", "manifest.json")),
}
CACHE_NAME = "resnet-edu"


def checkout_root() -> Path | None:
    """The repository this package is imported from, or None for an installed package."""
    root = Path(__file__).resolve().parents[1]
    is_checkout = (root / "pyproject.toml").is_file() and all(
        (root / source).is_dir() for source, _ in SHIPPED.values())
    return root if is_checkout else None


def shipped(name: str) -> Path:
    """The folder of a shipped file set ('cifar10-sample', 'results' or 'weights'): the repository's
    own folder in a checkout, else the copy inside the installed package."""
    if name not in SHIPPED:
        raise ValueError(f"name must be one of {sorted(SHIPPED)}, got {name!r}")
    root = checkout_root()
    if root is not None:
        path = root / SHIPPED[name][0]
    else:
        found = resources.files(PACKAGE) / SHIPPED_DIR / name
        if not isinstance(found, Path):  # e.g. a zipped package: no folder on disk to read
            raise FileNotFoundError(f"expected {PACKAGE} installed as files on disk, so that "
                                    f"its {name} can be read; got {found!r}")
        path = found
    if not path.is_dir():
        raise FileNotFoundError(
            f"the {name} files that ship with {PACKAGE} are missing: expected the folder "
            f"{path}; reinstall the package (or, in a checkout, restore {SHIPPED[name][0]}/)")
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
