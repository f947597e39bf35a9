"""The CIFAR-10 loader: the sample, a missing folder, corrupt and partial copies, the
classic torchvision DataLoader path."""

import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from resnet_edu.data import (
    CLASSES,
    LAYOUT,
    SAMPLE_DIR,
    Cifar10,
    DatasetError,
    ImageSet,
    classic_transforms,
    dataloader,
    find_cifar10,
    fingerprint,
    load_cifar10,
    load_sample,
    missing_files,
    normalize,
)


@pytest.fixture
def copy(tmp_path):
    """A writable copy of the sample in tmp_path/cifar-10-batches-py."""
    shutil.copytree(SAMPLE_DIR / LAYOUT, tmp_path / LAYOUT)
    return tmp_path


def test_sample_splits_shapes_and_labels():
    data = load_sample(val_size=200)
    assert (len(data.train), len(data.val), len(data.test)) == (1800, 200, 1000)
    assert data.train.images.shape == (1800, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.test.labels.dtype == torch.int64
    assert torch.bincount(data.test.labels).tolist() == [100] * len(CLASSES)
    # train and val are disjoint pieces of the same 2,000 images
    both = torch.cat([data.train.images, data.val.images]).flatten(1)
    assert len(torch.unique(both, dim=0)) == 2000


def test_missing_directory_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr("resnet_edu.data.DEFAULT_DIR", tmp_path / "default")
    with pytest.raises(DatasetError, match="not found") as e:
        find_cifar10(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(e.value) and "download" in str(e.value)


def test_corrupt_file_is_reported(copy):
    (copy / LAYOUT / "data_batch_3").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(DatasetError, match=r"data_batch_3.*corrupt"):
        load_cifar10(copy, val_size=200)


def test_wrong_shape_and_labels_are_reported(copy):
    path = copy / LAYOUT / "test_batch"
    batch = {b"data": np.zeros((10, 1024), np.uint8), b"labels": list(range(10))}
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match=r"shape \(N, 3072\)"):
        load_cifar10(copy, val_size=200)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match=r"labels in 0\.\.9"):
        load_cifar10(copy, val_size=200)


def test_partial_copy_is_reported(copy):
    (copy / LAYOUT / "data_batch_5").unlink()
    with pytest.raises(DatasetError, match="missing data_batch_5"):
        load_cifar10(copy, val_size=200)


def test_environment_variable_points_at_a_copy(copy, monkeypatch):
    monkeypatch.setenv("RESNET_EDU_DATA", str(copy))
    assert find_cifar10() == copy / LAYOUT


def test_classic_dataloader_matches_normalize():
    data = load_sample().test.subset(slice(0, 50))
    x, y = next(iter(dataloader(data, 50, train=False)))
    assert torch.allclose(x, normalize(data.images), atol=1e-6)
    assert torch.equal(y, data.labels)
    x, y = next(iter(dataloader(data, 16, train=True)))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert len(classic_transforms(True).transforms) == 4  # crop, flip, to float, normalize


class _Payload:
    """What a malicious batch file holds: unpickling it would create `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_batch_that_would_run_code_is_refused_before_it_runs(copy):
    marker = copy / "code-ran"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Payload(marker)}
    (copy / LAYOUT / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match=r"data_batch_1 is not a CIFAR-10 batch: it asks to "
                                           r"load `(builtins|_?io)\.open`") as e:
        load_cifar10(copy)
    assert "refused before running anything" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batches_pickled_by_any_protocol_still_load(copy, protocol):
    # the original files are Python 2 pickles; copies re-saved by NumPy/pickle today differ
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
             b"labels": [int(v) for v in rng.integers(0, 10, 10)],
             b"batch_label": b"testing batch 1 of 1", b"filenames": [b"a.png"] * 10}
    (copy / LAYOUT / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    test = load_cifar10(copy).test
    assert torch.equal(test.images.flatten(1), torch.from_numpy(batch[b"data"]))
    assert test.labels.tolist() == batch[b"labels"]


@pytest.mark.parametrize(("val_size", "message"), [
    (10.5, "got 10.5 (float)"), ("100", "got '100' (str)"), (True, "got True (bool)"),
    (-1, "got -1"), (2000, "must be an integer in [0, 1999], got 2000"),
])
def test_val_size_errors_name_the_argument(val_size, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        load_sample(val_size=val_size)
    assert str(e.value).startswith("val_size must be an integer in [0, 1999], got ")
    assert str(e.value).endswith(": the training set has 2,000 images")


def test_the_default_validation_split_is_a_tenth(copy):
    assert (len(load_sample(val_size=None).val), len(load_cifar10(copy).val)) == (200, 200)
    assert len(load_cifar10(copy, val_size=0).val) == 0
    assert missing_files(copy) == [] and missing_files(copy / LAYOUT) == []
    (copy / LAYOUT / "data_batch_2").unlink()
    assert missing_files(copy) == ["data_batch_2"]


def test_fingerprint_tells_data_apart_wherever_it_is_read(copy):
    same_elsewhere = load_cifar10(copy)
    sample = load_sample()
    assert same_elsewhere.source != sample.source
    assert fingerprint(same_elsewhere) == fingerprint(sample)
    assert fingerprint(load_sample(val_size=300)) != fingerprint(sample)
    one_label = sample.train.labels.clone()
    one_label[0] = (one_label[0] + 1) % 10
    relabelled = Cifar10(ImageSet(sample.train.images, one_label), sample.val, sample.test, "x")
    assert fingerprint(relabelled) != fingerprint(sample)


def test_data_label_comes_from_the_files_read(copy):
    from resnet_edu.data import data_label

    assert data_label(load_sample()) == "CIFAR-10 sample"
    assert data_label(load_cifar10(copy)) == "CIFAR-10 (unofficial copy)"  # no filenames
    batches = copy / LAYOUT
    for name in ("data_batch_1", "test_batch"):  # name each image as a JPEG copy does
        with open(batches / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        n = len(batch[b"labels"] if b"labels" in batch else batch["labels"])
        batch["filenames"] = [f"cat/{i:04d}.jpg" for i in range(n)]
        with open(batches / name, "wb") as f:
            pickle.dump(batch, f)
    assert data_label(load_cifar10(copy)) == "CIFAR-10 (JPEG copy)"
