"""CIFAR-10: find it, read the standard `cifar-10-batches-py` layout, check it, split it.

Where the data comes from, in order:
  1. the `data_dir` argument, or the `RESNET_EDU_DATA` environment variable;
  2. `DEFAULT_DIR`: `data/cifar10/` in a checkout of the repository (where
     `python -m resnet_edu download` puts it), else the per-user cache folder
     (`~/.cache/resnet-edu/cifar10/`; see `locations.default_data_dir`);
  3. a download with torchvision into the first of those, when `download=True`.
A directory may be the `cifar-10-batches-py` folder itself or the folder that holds it.
The layout is read directly (not through torchvision's class) so any faithful copy works,
checksums aside. `load_sample()` reads the small sample that ships with the package
(`resnet_edu/shipped/cifar10-sample/`), which the tests and the quick notebook settings
use; `load_cifar10_or_sample()` falls back to it, saying so, when the full set is missing.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import ArgumentError, check_int
from .locations import default_data_dir, shipped

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
IMAGE_SIZE = 32  # CIFAR-10 images are 32 x 32 pixels
ENV_VAR = "RESNET_EDU_DATA"
LAYOUT = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
DEFAULT_DIR = default_data_dir()  # data/cifar10 in a checkout, else the user cache folder
SAMPLE_DIR = shipped("cifar10-sample")
# per-channel mean and std of the CIFAR-10 training images, in [0, 1] units
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class DatasetError(ValueError):
    """The dataset is missing, partial or corrupt; the message says what and where."""


class DatasetNotFound(DatasetError):
    """No copy in any of the places `looked`, and no download (or a failed one). The message is
    `problem` and then `how_to_get` (the Python API's advice; the command line gives its own)."""

    def __init__(self, problem: str, looked: list[Path], download_error: str | None = None,
                 how_to_get: str = "") -> None:
        super().__init__(f"{problem} {how_to_get}".strip())
        self.problem, self.how_to_get = problem, how_to_get
        self.looked, self.download_error = looked, download_error


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,), on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | slice) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Cifar10:
    """The three splits: `train` and `val` for fitting and choosing, `test` for the end."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    source: str  # the directory it was read from


def _batches_dir(path: Path) -> Path:
    return path if path.name == LAYOUT else path / LAYOUT


# the only globals a CIFAR-10 batch refers to: NumPy's array rebuilders (old and new module
# names), and `_codecs.encode`, which protocol-2 pickles use to rebuild bytes
_BATCH_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *((m, f) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
      for f in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds: dicts, lists, str, bytes, ints and NumPy
    arrays. A file that names any other function or class is refused before anything in it
    runs (a plain `pickle.load` would call whatever the file names)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _BATCH_GLOBALS:
            raise DatasetError(
                f"{self.path} is not a CIFAR-10 batch: it asks to load `{module}.{name}`, which "
                "a batch never contains, so it was refused before running anything; delete it "
                "and download or unpack the data again"
            )
        return super().find_class(module, name)

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.path = getattr(file, "name", "the file")


def missing_files(directory: str | Path) -> list[str]:
    """The batch files a complete CIFAR-10 copy has that `directory` lacks (empty: complete).
    `directory` may be the `cifar-10-batches-py` folder or the folder that holds it."""
    batches = _batches_dir(Path(directory).expanduser())
    return [name for name in TRAIN_FILES + TEST_FILES if not (batches / name).is_file()]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (uint8 (N, 3072), int64 (N,)), checked."""
    try:
        with open(path, "rb") as f:
            # the original files are Python 2 pickles, hence bytes keys
            raw = _BatchUnpickler(f, encoding="bytes").load()
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(
            f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}: {e}); "
            "the copy is corrupt: delete it and download or unpack it again"
        ) from e
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    missing = {"data", "labels"} - batch.keys()
    if missing:
        raise DatasetError(
            f"{path}: expected keys 'data' and 'labels', missing {sorted(missing)} "
            f"(found {sorted(batch)})"
        )
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072):
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise DatasetError(f"{path}: expected 'data' as a uint8 array of shape (N, 3072), "
                           f"got {got}")
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: expected {len(data)} labels (one per image), "
                           f"got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DatasetError(f"{path}: expected labels in 0..9, got {labels.min()}..{labels.max()}")
    return data, labels


def read_split(directory: str | Path, files: tuple[str, ...]) -> ImageSet:
    """Read and concatenate the given batch files from a `cifar-10-batches-py` folder."""
    directory = _batches_dir(Path(directory))
    absent = [name for name in files if not (directory / name).is_file()]
    if absent:
        raise DatasetError(
            f"{directory} is not a complete CIFAR-10 copy: missing {', '.join(absent)} "
            f"(expected {', '.join(TRAIN_FILES + TEST_FILES)})"
        )
    parts = [_read_batch(directory / name) for name in files]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    images = torch.from_numpy(data).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)  # rows are CHW
    return ImageSet(images, torch.from_numpy(labels))


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for CIFAR-10, in order; a download goes into the first one."""
    candidates: list[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir).expanduser())
    elif os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]).expanduser())
    candidates.append(DEFAULT_DIR)
    return candidates


def find_cifar10(data_dir: str | Path | None = None, download: bool = False) -> Path:
    """The `cifar-10-batches-py` folder to read, downloading it if asked and needed."""
    candidates = data_dirs(data_dir)
    for c in candidates:
        if (_batches_dir(c) / TEST_FILES[0]).is_file():
            return _batches_dir(c)
    target = candidates[0]
    looked = ", ".join(map(str, candidates))
    if download:
        import torchvision  # only needed for the download itself

        try:
            torchvision.datasets.CIFAR10(str(target), train=True, download=True)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            raise DatasetNotFound(
                f"CIFAR-10 is not in {looked} and the download into {target} failed "
                f"({reason}).", candidates, reason, HOW_TO_GET) from e
        return _batches_dir(target)
    raise DatasetNotFound(f"CIFAR-10 not found: looked for {LAYOUT}/ in {looked}.", candidates,
                          how_to_get=HOW_TO_GET)


HOW_TO_GET = (
    "Pass download=True (or run `python -m resnet_edu download`) to fetch it (170 MB), or "
    f"point data_dir or ${ENV_VAR} at a folder holding {LAYOUT}/, or use load_sample() "
    "for the small sample shipped with the package."
)


def default_val_size(train_images: int) -> int:
    """A tenth of the training images: 5,000 of CIFAR-10's 50,000, 200 of the sample's 2,000."""
    return train_images // 10


def train_val_split(train: ImageSet, val_size: int | None = None, seed: int = 0
                    ) -> tuple[ImageSet, ImageSet]:
    """Hold out `val_size` training images (a fixed random choice) for choosing settings;
    None holds out a tenth (`default_val_size`)."""
    if val_size is None:
        val_size = default_val_size(len(train))
    try:
        val_size = check_int("val_size", val_size, low=0, high=len(train) - 1)
    except ArgumentError as e:
        raise ArgumentError(e.name, f"{e.requirement}: the training set has {len(train):,} "
                                    "images") from None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:]), train.subset(order[:val_size])


def load_cifar10(data_dir: str | Path | None = None, download: bool = False,
                 val_size: int | None = None, seed: int = 0) -> Cifar10:
    """CIFAR-10 as uint8 tensors: train (50k - val_size), val (val_size, default 5,000: a
    tenth) and test (10k)."""
    directory = find_cifar10(data_dir, download)
    train, val = train_val_split(read_split(directory, TRAIN_FILES), val_size, seed)
    return Cifar10(train, val, read_split(directory, TEST_FILES), str(directory))


def load_sample(val_size: int = 200, seed: int = 0) -> Cifar10:
    """The small real sample shipped with the package (2,000 train, 1,000 test images)."""
    return load_cifar10(SAMPLE_DIR, val_size=val_size, seed=seed)


def load_cifar10_or_sample(data_dir: str | Path | None = None, download: bool = False,
                           val_size: int = 5000, seed: int = 0) -> Cifar10:
    """`load_cifar10`, or, when no copy is found (nor downloaded), the shipped sample after
    one printed sentence: where it looked, how to get the full set, that it goes on with
    the sample. A copy that is found but broken still raises `DatasetError`."""
    try:
        directory = find_cifar10(data_dir, download)
    except DatasetNotFound as e:
        sample = load_sample()
        looked = ", ".join(_shown(p) for p in e.looked)
        failed = f" and the download failed ({e.download_error})" if e.download_error else ""
        print(f"CIFAR-10 is not in {looked}{failed}: to train on the full set, run "
              f"`python -m resnet_edu download` (170 MB) or point ${ENV_VAR} at a folder "
              f"holding {LAYOUT}/; continuing on the sample shipped with the package "
              f"({len(sample.train) + len(sample.val):,} training and "
              f"{len(sample.test):,} test images).", flush=True)
        return sample
    return load_cifar10(directory, val_size=val_size, seed=seed)


def _shown(path: Path) -> str:
    """A path as a reader wants it: `~/...` for the home folder."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def fingerprint(data: Cifar10) -> str:
    """A short hash of the training and validation images and labels, with their counts: equal
    for the same data read from any folder, different for another copy, split or sample."""
    h = hashlib.sha256()
    for part in (data.train, data.val):
        h.update(f"{len(part)}:".encode())
        h.update(part.labels.contiguous().numpy())
        h.update(part.images.contiguous().numpy())
    return h.hexdigest()[:16]


def data_label(data: Cifar10) -> str:
    """What `data` is, for figure titles and reports, read from the files it came from:
    "CIFAR-10" for the official release (the test batch's MD5 is torchvision's),
    "CIFAR-10 (JPEG copy)" for a copy made from JPEG files (its batches name `.jpg` files),
    "CIFAR-10 sample" for the sample shipped with the package, else "CIFAR-10 (unofficial
    copy)": a copy whose files differ from the release in some other way."""
    directory = _batches_dir(Path(data.source))
    if directory.resolve() == _batches_dir(SAMPLE_DIR).resolve():
        return "CIFAR-10 sample"
    test_file = directory / TEST_FILES[0]
    from torchvision.datasets import CIFAR10

    official = dict(CIFAR10.test_list)[TEST_FILES[0]]
    if hashlib.md5(test_file.read_bytes()).hexdigest() == official:
        return "CIFAR-10"
    with open(test_file, "rb") as f:
        raw = _BatchUnpickler(f, encoding="bytes").load()
    names = raw.get(b"filenames", raw.get("filenames", [])) if isinstance(raw, dict) else []
    if names and all((n.decode() if isinstance(n, bytes) else str(n)).lower().endswith(".jpg")
                     for n in names):
        return "CIFAR-10 (JPEG copy)"
    return "CIFAR-10 (unofficial copy)"


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, per channel zero mean and unit std."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


# --- the classic path: a torchvision Dataset + transforms + DataLoader ---------------------

class ImageSetDataset(torch.utils.data.Dataset):
    """An `ImageSet` as a map-style Dataset: item i is (transform(image_i), label_i).

    This is the pipeline students meet everywhere (one image at a time, augmented by
    torchvision `transforms` in DataLoader workers); `augment.DeviceLoader` is the fast path.
    """

    def __init__(self, data: ImageSet, transform=None) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.data.images[i]  # (3, 32, 32) uint8
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.data.labels[i])


def classic_transforms(train: bool, padding: int = 4, flip: bool = True):
    """torchvision v2 transforms on uint8 tensors: crop + flip (training), then to float and
    normalize, as in He et al. 2015, Sec. 4.2."""
    from torchvision.transforms import v2

    steps = []
    if train:
        if padding:
            steps.append(v2.RandomCrop(IMAGE_SIZE, padding=padding))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    return v2.Compose(steps)


def dataloader(data: ImageSet, batch_size: int, train: bool, num_workers: int = 0,
               padding: int = 4, flip: bool = True, seed: int = 0
               ) -> torch.utils.data.DataLoader:
    """The classic `DataLoader` over `data` (shuffled and augmented when `train`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return torch.utils.data.DataLoader(
        ImageSetDataset(data, classic_transforms(train, padding, flip)),
        batch_size=batch_size, shuffle=train, drop_last=train, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0,
    )
