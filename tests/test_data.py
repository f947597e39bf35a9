"""The CIFAR-10 loader: the sample, a missing folder, corrupt and partial copies, the
classic torchvision DataLoader path."""

import pickle
import shutil

import numpy as np
import pytest
import torch

from resnet_edu.data import (
    CLASSES,
    LAYOUT,
    SAMPLE_DIR,
    DatasetError,
    classic_transforms,
    dataloader,
    find_cifar10,
    load_cifar10,
    load_sample,
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
    with pytest.raises(DatasetError, match="data_batch_3.*corrupt"):
        load_cifar10(copy, val_size=200)


def test_wrong_shape_and_labels_are_reported(copy):
    path = copy / LAYOUT / "test_batch"
    batch = {b"data": np.zeros((10, 1024), np.uint8), b"labels": list(range(10))}
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match=r"shape \(N, 3072\)"):
        load_cifar10(copy, val_size=200)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match="labels in 0..9"):
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
