"""Shortcut connections: when a block needs a projection, and the paper's options A/B/C.

He et al. 2015, "Deep Residual Learning", Sec. 3.3 and Table 3:
  A: identity, with strided subsampling and zero-padded extra channels (no parameters);
  B: identity where shapes match, a 1x1 strided projection (+ BN) where they do not (default);
  C: a projection on every block.
"D" is the later "ResNet-D" tweak (He et al. 2019, "Bag of Tricks", Sec. 4.2): average-pool
first, then a stride-1 1x1 projection, so the shortcut sees every input pixel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

SHORTCUT_OPTIONS = ("A", "B", "C", "D")

NormLayer = Callable[[int], nn.Module]


def needs_projection(in_channels: int, out_channels: int, stride: int) -> bool:
    """True when x cannot be added to F(x) as it is: the spatial size or the channels change."""
    return stride != 1 or in_channels != out_channels


def check_shortcut_option(option: str) -> str:
    """Return the option in upper case, or raise a ValueError naming the valid ones."""
    if not isinstance(option, str) or option.upper() not in SHORTCUT_OPTIONS:
        raise ValueError(
            f"shortcut must be one of {', '.join(SHORTCUT_OPTIONS)} "
            f"(He et al. 2015, Sec. 3.3), got {option!r}"
        )
    return option.upper()


class ZeroPadShortcut(nn.Module):
    """Option A: keep every other pixel, append zero channels. No parameters.

    (B, C_in, H, W) -> (B, C_out, ceil(H/stride), ceil(W/stride)), which is the size a 3x3
    conv with padding 1 and the same stride produces, so the two paths can be added.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"option A can only add channels, got {in_channels} -> {out_channels}"
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)
        extra = self.out_channels - self.in_channels
        if extra == 0:
            return x
        # pad (W: 0, 0), (H: 0, 0), (C: 0, extra): the new channels are all zero
        return nn.functional.pad(x, (0, 0, 0, 0, 0, extra))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_downsample(
    in_channels: int,
    out_channels: int,
    stride: int,
    option: str = "B",
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> nn.Module | None:
    """The shortcut module for a block, or None where the shortcut is the plain identity.

    Named `downsample` as in torchvision, so option B's state_dict keys match theirs.
    """
    option = check_shortcut_option(option)
    if option != "C" and not needs_projection(in_channels, out_channels, stride):
        return None
    if option == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    if option == "D":
        # average-pool then project, so no input pixel is skipped
        pool: nn.Module = nn.Identity()
        if stride != 1:
            pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
        return nn.Sequential(
            pool,
            nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False),
            norm_layer(out_channels),
        )
    # B (only where needed) and C (everywhere): a strided 1x1 projection W_s (Eq. 2) + BN
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        norm_layer(out_channels),
    )
