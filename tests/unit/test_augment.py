"""Batched augmentation: shapes, a flip that really flips, crops that stay in range."""

import pytest
import torch
import torch.nn.functional as F

from resnet_edu.augment import (
    DeviceLoader,
    crop_offsets_limit,
    cutout,
    epoch_generator,
    normalize_fused,
    random_crop,
    random_crop_flip,
    random_flip,
)
from resnet_edu.data import ImageSet, normalize


def _images(n: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)


def test_crop_shapes_dtype_and_size():
    x = _images()
    assert random_crop(x, 4).shape == (16, 3, 32, 32)
    assert random_crop(x, 4).dtype == torch.uint8
    assert random_crop(x, 4, size=24).shape == (16, 3, 24, 24)


def test_each_crop_is_a_window_of_the_padded_image():
    # oracle: every output must equal some window of torch's zero-padded image
    x = _images(8)
    padded = F.pad(x, (4, 4, 4, 4))  # (8, 3, 40, 40)
    out = random_crop(x, 4, generator=torch.Generator().manual_seed(1))
    offsets = set()
    for b in range(len(x)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[b, :, dy:dy + 32, dx:dx + 32], out[b])]
        assert matches, f"crop {b} is not a window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 1, "every image got the same crop offset"


def test_small_crops_stay_inside_the_image_when_padding_is_used_up():
    x = torch.ones(64, 1, 32, 32)
    assert crop_offsets_limit(24, 4) == 8  # (32 - 24) // 2 = 4 pixels eat the padding
    out = random_crop(x, 4, size=24)
    assert torch.equal(out, torch.ones(64, 1, 24, 24)), "a 24-pixel crop shows padding"
    assert crop_offsets_limit(28, 4) == 8 and crop_offsets_limit(32, 4) == 8
    with pytest.raises(ValueError, match="crop size"):
        random_crop(x, 4, size=33)


def test_flip_really_flips():
    x = _images(200)
    out = random_flip(x, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((flipped | kept).all())
    assert 60 < int(flipped.sum()) < 140  # about half, independently per image
    assert torch.equal(random_flip(x, p=1.0), x.flip(-1))
    assert torch.equal(random_flip(x, p=0.0), x)


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(32, 3, 32, 32)
    out = cutout(x, 8, generator=torch.Generator().manual_seed(0))
    zeros = (out == 0).all(1).sum((1, 2))  # (B,) zeroed pixels per image
    assert bool((zeros <= 64).all()) and bool((zeros >= 16).all())  # may be clipped at edges
    assert torch.equal(cutout(x, 0), x)


def test_device_loader_epochs_are_reproducible_and_cover_the_set():
    data = ImageSet(_images(100), torch.arange(100) % 10)
    loader = DeviceLoader(data, 32, train=True, seed=3)
    assert len(loader) == 3
    loader.set_epoch(1)
    first = [(x.clone(), y.clone()) for x, y in loader]
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(first, again, strict=True))
    loader.set_epoch(2)
    assert not torch.equal(next(iter(loader))[1], first[0][1])
    perm = [torch.randperm(100, generator=epoch_generator(0, e)) for e in (1, 1, 2)]
    assert torch.equal(perm[0], perm[1]) and not torch.equal(perm[0], perm[2])
    evaluation = DeviceLoader(data, 32, train=False)
    xs, ys = zip(*evaluation, strict=True)
    assert torch.equal(torch.cat(ys), data.labels)  # in order, nothing dropped
    assert torch.allclose(torch.cat(xs), normalize(data.images), atol=1e-5)  # unchanged


def test_fused_crop_flip_is_a_crop_or_its_mirror_and_normalize_matches():
    x = _images(64)
    padded = F.pad(x, (4, 4, 4, 4))
    out = random_crop_flip(x, 4, generator=torch.Generator().manual_seed(2))
    flips = 0
    for b in range(len(x)):
        windows = [padded[b, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        plain = any(torch.equal(wi, out[b]) for wi in windows)
        mirrored = any(torch.equal(wi.flip(-1), out[b]) for wi in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 10 < flips < 54
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(normalize_fused(cl), normalize(x), atol=1e-5)
    assert normalize_fused(cl).is_contiguous(memory_format=torch.channels_last)
