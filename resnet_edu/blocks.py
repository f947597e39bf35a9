"""Residual blocks, as in torchvision, and their plain twins (the same block, no shortcut).

A residual block computes y = F(x) + x (He et al. 2015, Eq. 1), or y = F(x) + W_s x with a
projection where the shapes differ (Eq. 2). `BasicBlock` and `Bottleneck` apply the final
ReLU after the addition ("post-activation", 2015); `PreActBlock` moves BN and ReLU in front
of the convolutions so the shortcut is a clean identity (He et al. 2016, "Identity
Mappings", Fig. 4e). Each `Plain...` class is its block with the shortcut removed and
nothing else changed, so "plain vs residual" differs in exactly one thing.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .shortcuts import NormLayer, make_downsample


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1: keeps H and W at stride 1, halves them at stride 2."""
    # bias=False: the BatchNorm that follows has its own shift, a conv bias would be wasted
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution: mixes channels, keeps every `stride`-th pixel."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def check_positive_int(name: str, value: object) -> None:
    """Raise a ValueError unless value is an int >= 1 (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_batch(x: torch.Tensor, channels: int, where: str) -> None:
    """Raise a ValueError unless x is an image batch (B, channels, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{where} expects a 4-D batch (B, C, H, W) with C={channels}, "
            f"got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
            + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{where} expects {channels} input channels, got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )


class _Block(nn.Module):
    """What every block shares: the shortcut and the input check."""

    expansion: ClassVar[int] = 1
    residual: ClassVar[bool] = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "B",
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("inplanes", inplanes), ("planes", planes), ("stride", stride)):
            check_positive_int(name, value)
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.out_channels = planes * self.expansion
        self.norm_layer = norm_layer or nn.BatchNorm2d
        self._shortcut_option = shortcut

    def _add_shortcut(self) -> None:
        """Build `downsample` last, so state_dict keys come in torchvision's order."""
        # plain twins have no shortcut at all, not even a projection
        self.downsample = (
            make_downsample(self.inplanes, self.out_channels, self.stride,
                            self._shortcut_option, self.norm_layer)
            if self.residual
            else None
        )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The identity (or projection) path: x, or W_s x."""
        return x if self.downsample is None else self.downsample(x)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): the part of the block that learns."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, self.inplanes, type(self).__name__)
        out = self.residual_branch(x)  # (B, planes*expansion, H/stride, W/stride)
        if self.residual:
            out = out + self.shortcut(x)  # y = F(x) + x  (Eq. 1)
        return self.relu(out)

    def zero_init_last_norm(self) -> None:
        """Start the block as the identity (F = 0): Goyal et al. 2017; torchvision's option."""
        last = self.last_norm
        if isinstance(last, nn.BatchNorm2d):
            nn.init.zeros_(last.weight)


class BasicBlock(_Block):
    """Two 3x3 convs (He et al. 2015, Fig. 5 left). Used by ResNet-18/34 and the CIFAR nets."""

    expansion: ClassVar[int] = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "B",
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__(inplanes, planes, stride, shortcut, norm_layer)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = self.norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = self.norm_layer(planes)
        self._add_shortcut()

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        return self.bn2(self.conv2(out))  # (B, planes, H/s, W/s)


class Bottleneck(_Block):
    """1x1 reduce, 3x3, 1x1 expand by 4 (He et al. 2015, Fig. 5 right). ResNet-50/101/152.

    The stride sits on the 3x3 conv, as in torchvision ("ResNet v1.5").
    """

    expansion: ClassVar[int] = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "B",
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__(inplanes, planes, stride, shortcut, norm_layer)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = self.norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = self.norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = self.norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._add_shortcut()

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H/s, W/s)
        return self.bn3(self.conv3(out))  # (B, 4*planes, H/s, W/s)


class PreActBlock(_Block):
    """BN-ReLU-conv twice, then add: x_{l+1} = x_l + F(x_l) exactly (He et al. 2016, Eq. 3).

    No ReLU after the addition, so the identity path is untouched from block to block.
    A net of these needs one BN + ReLU after its last block (see `CifarResNet`).
    """

    expansion: ClassVar[int] = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "B",
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__(inplanes, planes, stride, shortcut, norm_layer)
        self.bn1 = self.norm_layer(inplanes)
        self.relu = nn.ReLU(inplace=False)  # x itself is reused by the shortcut
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = self.norm_layer(planes)
        self.conv2 = conv3x3(planes, planes)
        self._add_shortcut()

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))  # (B, planes, H/s, W/s)
        return self.conv2(self.relu(self.bn2(out)))  # (B, planes, H/s, W/s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, self.inplanes, type(self).__name__)
        out = self.residual_branch(x)
        return out + self.shortcut(x) if self.residual else out


class PlainBasicBlock(BasicBlock):
    """`BasicBlock` without its shortcut: y = ReLU(F(x))."""

    residual: ClassVar[bool] = False


class PlainBottleneck(Bottleneck):
    """`Bottleneck` without its shortcut."""

    residual: ClassVar[bool] = False


class PlainPreActBlock(PreActBlock):
    """`PreActBlock` without its shortcut."""

    residual: ClassVar[bool] = False


def plain_twin(block: type[_Block]) -> type[_Block]:
    """The plain class of a residual block class (and the plain class itself)."""
    twins = {
        BasicBlock: PlainBasicBlock,
        Bottleneck: PlainBottleneck,
        PreActBlock: PlainPreActBlock,
    }
    return twins.get(block, block)
