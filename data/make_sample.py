"""Make the small CIFAR-10 sample in resnet_edu/shipped/cifar10-sample/ from a full copy.

    python data/make_sample.py [FULL_COPY_DIR]

Takes the first 40 training images of each class from each of the five training batches
(2,000 in all) and the first 100 test images of each class (1,000), keeping the standard
`cifar-10-batches-py` layout so that the same loader reads the sample and the full set.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

from resnet_edu.data import CLASSES, LAYOUT, SAMPLE_DIR, find_cifar10, read_split


def stratified_first(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` images of each class, in their original order."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))])
    return np.sort(keep)


def write_batch(path: Path, label: str, images: np.ndarray, labels: np.ndarray) -> None:
    batch = {"batch_label": label, "data": images.reshape(len(images), -1),
             "labels": labels.tolist()}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=4)


def main(source: str | None = None) -> None:
    src = find_cifar10(source)
    out = SAMPLE_DIR / LAYOUT
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        part = read_split(src, (f"data_batch_{i}",))
        keep = stratified_first(part.labels.numpy(), 40)
        write_batch(out / f"data_batch_{i}", f"sample of training batch {i}",
                    part.images.numpy()[keep], part.labels.numpy()[keep])
    test = read_split(src, ("test_batch",))
    keep = stratified_first(test.labels.numpy(), 100)
    write_batch(out / "test_batch", "sample of the test batch",
                test.images.numpy()[keep], test.labels.numpy()[keep])
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES), "num_vis": 3072}, f, protocol=4)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
