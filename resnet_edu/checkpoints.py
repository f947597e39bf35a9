"""Run folders and checkpoints: one training per folder, atomic writes, safe loading.

    out = prepare_out_dir("runs/r18")          # a folder we can write to, or one clear error
    with lock_out_dir(out):                    # a second training into `out` is refused at once
        save_checkpoint(out / CHECKPOINT, state)
    state = load_checkpoint(out / CHECKPOINT)  # weights_only; a bad file is explained in one line
    config = config_from_checkpoint(state, path)  # the TrainConfig it was written with

Every file is written to a uniquely named temporary file in the same folder and then renamed
over the target, so an interruption (Ctrl-C, a crash, a killed process, even mid-write)
leaves the old file or the new one, never half of one. Temporary files a killed run left
behind are removed by the next run into that folder (`remove_stale_temp_files`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from .recipe import TrainConfig

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
LOCK = "train.lock"  # holds the id of the process training into the folder
CHECKPOINT_KEYS = ("model", "optimizer", "scaler", "epoch", "config", "history", "planned_epochs",
                   "planned_steps", "data", "start_loss", "hardware")
_TEMP_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A file is not a checkpoint `fit` can use; the message says what it is and what to do."""


class OutputDirError(ValueError):
    """The output folder cannot be used: it is a file, not writable, or in use by another run."""


# --- the output folder ---------------------------------------------------------------------

def prepare_out_dir(out_dir: str | Path, name: str = "out_dir") -> Path:
    """Create `out_dir` if needed and check that files can be written in it.

    `name` is how the caller calls the folder in messages (`--out` on the command line).
    """
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{name} {path} is a file, not a folder: give a folder name "
                             "(it is created if it does not exist)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputDirError(f"{name} {path} cannot be created: part of that path is a file, "
                             "not a folder; choose another folder") from None
    except OSError as e:
        raise OutputDirError(f"{name} {path} cannot be created ({e.strerror}): choose a folder "
                             "you can write to") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.", suffix=_TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputDirError(f"{name} {path} is not writable ({e.strerror}): choose a folder "
                             "you can write to") from None
    return path


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file `fd` without waiting. The system releases it
    when the process ends, however it ends (even SIGKILL), so a lock is never stale."""
    if os.name == "nt":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


_held: dict[Path, int] = {}  # folders this process has locked -> nesting depth


@contextmanager
def lock_out_dir(out_dir: str | Path) -> Iterator[Path]:
    """Hold the folder's lock while the block runs; refuse at once if another process holds
    it. Re-entrant within one process (the command line locks, then `fit` locks again)."""
    key = Path(out_dir).expanduser().resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield key
        finally:
            _held[key] -= 1
        return
    lock = key / LOCK
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            owner = ""
            with suppress(OSError, ValueError):
                owner = f" (process {int(lock.read_text().split()[0])})"
            raise OutputDirError(f"{key} is in use by another training{owner}: wait for it to "
                                 "finish, or choose another output folder")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = 1
        try:
            yield key
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing the file releases the lock


def _temp_pattern(target: str) -> str:
    return f".{target}.*{_TEMP_SUFFIX}"


def remove_stale_temp_files(out_dir: str | Path) -> list[Path]:
    """Delete temporary files that interrupted writes left in `out_dir`; call it only while
    holding the folder's lock (no other writer can be using them then)."""
    out = Path(out_dir)
    stale = [p for target in (CHECKPOINT, HISTORY) for p in out.glob(_temp_pattern(target))]
    stale += [p for p in (out / f"{CHECKPOINT}.tmp", out / f"{HISTORY}.tmp") if p.is_file()]
    for p in stale:
        with suppress(FileNotFoundError):
            p.unlink()
    return stale


# --- writing -------------------------------------------------------------------------------

def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(file)` on a new uniquely named temporary file next to `path`, flush it to
    disk, then rename it over `path` (an atomic step on every common file system)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: an interruption leaves the old checkpoint or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


# --- reading -------------------------------------------------------------------------------

_HOW_TO_LOAD_WEIGHTS = "model.load_state_dict(torch.load(path, weights_only=True))"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `fit`, on the CPU, with `weights_only=True` (no code in
    the file can run). Anything else raises a `CheckpointError` that says what the file is."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise CheckpointError(f"no checkpoint at {path} ({what}); `train` writes one to "
                              f"OUT/{CHECKPOINT}")
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        if zip_start or size == 0:
            raise CheckpointError(f"{path} is truncated or damaged ({size:,} bytes): it was "
                                  "cut off while being written or copied; use an intact copy")
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({size:,} bytes that are not "
                              "the zip archive torch.save writes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types; none is shown as is
        if "weights only" in str(e).lower() or isinstance(e, AttributeError):
            # torch's own message suggests turning the protection off: not advice to pass on
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors and plain values, so "
                "safe loading refused it (loading it could run code); it was not written by "
                "`fit`, and only the person who wrote it can tell you what it holds"
            ) from None
        raise CheckpointError(f"{path} is damaged: its archive does not read back "
                              f"({type(e).__name__}); use an intact copy") from None
    check_checkpoint(state, path)
    return state


def _is_state_dict(obj: object) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def check_checkpoint(state: object, path: str | Path) -> None:
    """Raise a `CheckpointError` unless `state` has the layout `fit` writes."""
    if _is_state_dict(state):
        raise CheckpointError(
            f"{path} holds bare model weights (a state_dict of {len(state)} tensors), not a "
            "training checkpoint with its recipe: build the matching model and load them with "
            f"`{_HOW_TO_LOAD_WEIGHTS}`"
        )
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint "
                              f"written by `fit` (a dict with {', '.join(CHECKPOINT_KEYS)})")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint written by `fit`: it lacks "
                              f"{', '.join(missing)} (it has {', '.join(map(str, state))})")
    if not _is_state_dict(state["model"]) or not isinstance(state["config"], dict):
        raise CheckpointError(f"{path} is not a checkpoint written by `fit`: its 'model' is "
                              "not a state_dict of tensors or its 'config' is not a dict")


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], path: str | Path,
                 ) -> None:
    """`model.load_state_dict(weights)`, with a one-line summary when the architectures
    differ: keys the model lacks, keys the file lacks, and shapes that disagree."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in own.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shapes differ (e.g. {shapes[0]})")
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown weights (e.g. {unexpected[0]})")
        raise CheckpointError(f"{path} holds weights of another architecture than "
                              f"{type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(weights)


def config_from_checkpoint(state: dict[str, Any], path: str | Path) -> TrainConfig:
    """The `TrainConfig` a checkpoint was written with (fields it lacks take their defaults)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(state["config"]) - known)
    if unknown:
        raise CheckpointError(f"{path} was written by another version of resnet-edu: its recipe "
                              f"has fields this version does not know ({', '.join(unknown)})")
    try:
        return TrainConfig(**state["config"])
    except ValueError as e:
        raise CheckpointError(f"{path} holds an invalid recipe: {e}") from None
