"""Batched augmentation on the device, and a loader that keeps the whole dataset there.

The classic pipeline (torchvision `transforms` + `DataLoader`, see `data.dataloader`) decodes
and augments one image at a time in worker processes. CIFAR-10 is only 150 MB as uint8, so
the fast path keeps all of it on the device and augments a whole batch with a few tensor
operations: a random crop with zero padding and a horizontal flip (the augmentation of
He et al. 2015, Sec. 4.2), optionally cutout (DeVries & Taylor 2017). Every image gets its
own crop offset, flip and cutout square.

All random choices come from a `torch.Generator` seeded per epoch (`epoch_generator`), so an
epoch's batches depend only on (seed, epoch): a resumed run sees exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .data import IMAGE_SIZE, MEAN, STD, ImageSet


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError("expected a batch of images (B, C, H, W), "
                         f"got shape {tuple(images.shape)}")


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device
             ) -> torch.Tensor:
    """n integers in [0, high), drawn on the generator's device and moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def crop_offsets_limit(size: int, padding: int, image_size: int = IMAGE_SIZE) -> int:
    """Largest crop offset: a `size` crop of an image padded by `padding` on each side.

    A crop smaller than the image (progressive resizing) uses less padding, so that a
    crop never shows more padding than a full-size one would: the effective padding is
    `max(0, padding - (image_size - size) // 2)`.
    """
    if not 1 <= size <= image_size:
        raise ValueError(f"crop size must be in 1..{image_size}, got {size}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    pad = max(0, padding - (image_size - size) // 2)
    return image_size + 2 * pad - size


def random_crop(images: torch.Tensor, padding: int = 4, size: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crops of `size` (default: the image size) after zero padding.

    Like torchvision's `RandomCrop(size, padding)`, but one call for the whole batch:
    (B, C, H, W) -> (B, C, size, size), same dtype.
    """
    return _crop(images, padding, size, generator, flip=False)


def random_flip(images: torch.Tensor, p: float = 0.5,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability p (torchvision's RandomHorizontalFlip)."""
    _check_images(images)
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    flip = torch.rand(len(images), generator=generator, device=gen_device).to(images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_crop_flip(images: torch.Tensor, padding: int = 4, size: int | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """`random_crop` and `random_flip` (p = 1/2) in one gather: a flipped image reads its
    crop's columns right to left, so the flip costs nothing extra. (B, C, H, W) -> (B, C, S, S)."""
    return _crop(images, padding, size, generator, flip=True)


def _crop(images: torch.Tensor, padding: int, size: int | None,
          generator: torch.Generator | None, flip: bool) -> torch.Tensor:
    """One gather per batch: a random window per image, its columns reversed where flipped."""
    _check_images(images)
    b, c, h, _ = images.shape  # (B, C, H, W); crops are square, so W is not needed
    size = h if size is None else size
    limit = crop_offsets_limit(size, padding, h)
    pad = (limit + size - h) // 2
    if pad:
        images = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    dy = _randint(limit + 1, b, generator, images.device)  # (B,)
    dx = _randint(limit + 1, b, generator, images.device)
    ar = torch.arange(size, device=images.device)
    rows = dy[:, None] + ar  # (B, S)
    cols = dx[:, None] + ar  # (B, S)
    if flip:
        flipped = _randint(2, b, generator, images.device).bool()  # (B,)
        cols = dx[:, None] + torch.where(flipped[:, None], size - 1 - ar, ar)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    return images[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, S, S)


def normalize_fused(images: torch.Tensor) -> torch.Tensor:
    """`data.normalize` as one multiply-add: (x / 255 - mean) / std = x * a + b.
    Keeps the memory format of `images` (e.g. channels_last)."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return torch.addcmul(-mean / std, images.float(), 1 / (255 * std))


def cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
           fill: float = 0.0) -> torch.Tensor:
    """Set one `size` x `size` square per image to `fill` (its centre anywhere in the image).

    Apply it after `normalize`, so that fill=0 is the mean colour (DeVries & Taylor 2017).
    """
    _check_images(images)
    if size < 0:
        raise ValueError(f"cutout size must be >= 0, got {size}")
    if size == 0:
        return images
    b, _, h, w = images.shape
    cy = _randint(h, b, generator, images.device)[:, None]  # (B, 1)
    cx = _randint(w, b, generator, images.device)[:, None]
    ys = torch.arange(h, device=images.device)[None, :]  # (1, H)
    xs = torch.arange(w, device=images.device)[None, :]
    inside_y = (ys >= cy - size // 2) & (ys < cy - size // 2 + size)  # (B, H)
    inside_x = (xs >= cx - size // 2) & (xs < cx - size // 2 + size)  # (B, W)
    mask = inside_y[:, None, :, None] & inside_x[:, None, None, :]  # (B, 1, H, W)
    return images.masked_fill(mask, fill)


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The random stream of one epoch: depends on (seed, epoch) only, so resume is exact."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


class DeviceLoader:
    """The whole image set as uint8 on `device`, yielding normalized float batches.

    Training batches (`train=True`) are a fresh permutation each epoch, randomly cropped
    (`padding`, crop `size`), flipped and cut out on the device; evaluation batches are the
    images in order, unchanged. Set the epoch with `set_epoch` (as with a
    `DistributedSampler`) to make the epoch's randomness reproducible.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, train: bool,
                 device: torch.device | str = "cpu", padding: int = 4, flip: bool = True,
                 cutout_size: int = 0, size: int = IMAGE_SIZE, drop_last: bool | None = None,
                 seed: int = 0, channels_last: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)  # (N, 3, 32, 32) uint8, stays on the device
        self.labels = data.labels.to(self.device)  # (N,)
        self.batch_size, self.train = batch_size, train
        self.padding, self.flip, self.cutout_size, self.size = padding, flip, cutout_size, size
        self.drop_last = train if drop_last is None else drop_last
        self.seed, self.epoch = seed, 0
        self.channels_last, self.dtype = channels_last, dtype

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        gen = epoch_generator(self.seed, self.epoch, "cpu")
        order = torch.randperm(n, generator=gen) if self.train else torch.arange(n)
        order = order.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x, y = self.images[idx], self.labels[idx]  # (B, 3, 32, 32) uint8, (B,)
            if self.train:
                crop = self.padding or self.size != x.shape[-1]
                if crop and self.flip:
                    x = random_crop_flip(x, self.padding, self.size, gen)
                elif crop:
                    x = random_crop(x, self.padding, self.size, gen)
                elif self.flip:
                    x = random_flip(x, generator=gen)
            if self.channels_last:  # convert the uint8 batch: 4x fewer bytes than float
                x = x.contiguous(memory_format=torch.channels_last)
            x = normalize_fused(x).to(self.dtype)  # (B, 3, S, S) float
            if self.train and self.cutout_size:
                x = cutout(x, self.cutout_size, gen)
            yield x, y
