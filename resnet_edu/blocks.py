"""Residual blocks, as in torchvision; `residual=False` gives the plain twin (no shortcut).

A residual block computes y = F(x) + x (He et al. 2015, Eq. 1), or y = F(x) + W_s x with a
projection where the shapes differ (Eq. 2). `BasicBlock` and `Bottleneck` apply the final
ReLU after the addition ("post-activation", 2015); `PreActBlock` moves BN and ReLU in front
of the convolutions so the shortcut is a clean identity (He et al. 2016, "Identity
Mappings", Fig. 4e). With `residual=False` a block is the same block with the shortcut
removed and nothing else changed, so "plain vs residual" differs in exactly one thing;
`PlainBasicBlock` (the class the plain nets are built of) is `BasicBlock` with
`residual=False`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .checks import check_int
from .shortcuts import NormLayer, make_downsample


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1: keeps H and W at stride 1, halves them at stride 2."""
    # bias=False: the BatchNorm that follows has its own shift, a conv bias would be wasted
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution: mixes channels, keeps every `stride`-th pixel."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ResidualBlock(nn.Module):
    """What `BasicBlock`, `Bottleneck` and `PreActBlock` share: their arguments, the shortcut
    path, zero-init, and `forward`, the residual rule written once. Each block writes its own
    `residual_branch` (F) and `after_addition` (what follows F(x) + s(x)).

    A subclass builds its layers, then `self.downsample = self.make_downsample()` last, as
    torchvision assigns it last, so that state_dict keys come in torchvision's order.
    """

    expansion: ClassVar[int] = 1

    def __new__(cls, *args: Any, residual: bool = True, **kwargs: Any) -> ResidualBlock:
        # BasicBlock(..., residual=False) is made a PlainBasicBlock (PLAIN_TWIN, at the end of
        # this file), so that `isinstance` finds the plain blocks however they were built
        if residual is False and cls in PLAIN_TWIN:
            cls = PLAIN_TWIN[cls]
        return super().__new__(cls)

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "B",
        norm_layer: NormLayer | None = None,
        *,
        residual: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("inplanes", inplanes), ("planes", planes), ("stride", stride)):
            check_int(name, value, low=1)
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be True or False, got {residual!r}")
        self.inplanes, self.planes, self.stride = inplanes, planes, stride
        self.out_channels = planes * self.expansion
        self.norm_layer = norm_layer or nn.BatchNorm2d
        self.shortcut_option = shortcut
        self.residual = residual

    def make_downsample(self) -> nn.Module | None:
        """The shortcut's module (None for the identity); a plain block has no shortcut at
        all, not even a projection."""
        if not self.residual:
            return None
        return make_downsample(self.inplanes, self.out_channels, self.stride,
                               self.shortcut_option, self.norm_layer)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The identity (or projection) path: x, or W_s x."""
        return x if self.downsample is None else self.downsample(x)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): the part of the block that learns."""
        raise NotImplementedError

    def after_addition(self, out: torch.Tensor) -> torch.Tensor:
        """What follows F(x) + s(x): the ReLU of a post-activation block (He et al. 2015),
        nothing in a pre-activation one (He et al. 2016)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, inplanes, H, W)
        # the residual rule, written once for every block: F(x), plus the shortcut, then
        # whatever the block puts after the addition
        out = self.residual_branch(x)  # F(x): (B, out_channels, H/s, W/s)
        if self.residual:
            out = out + self.shortcut(x)  # y = F(x) + x (Eq. 1), or F(x) + W_s x (Eq. 2)
        return self.after_addition(out)

    def last_layer(self) -> nn.Module:
        """The layer whose scale zero-init sets to 0, so that F(x) = 0."""
        raise NotImplementedError

    def zero_init_last(self) -> None:
        """Start the block as the identity: set F's last scale to 0, so F(x) = 0.

        Goyal et al. 2017, Sec. 5.1 (torchvision's `zero_init_residual`): the last norm's
        weight (gamma) for post-activation blocks; the last conv for `PreActBlock` (as timm
        does), whose last norm feeds a ReLU. Any norm with a learnable scale works
        (BatchNorm2d, GroupNorm, ...); one without (nn.Identity) raises a ValueError.
        """
        layer = self.last_layer()
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, nn.Parameter):
            raise ValueError(
                f"zero-init sets the weight of {type(self).__name__}'s last layer to 0, but "
                f"that layer is a {type(layer).__name__} without a learnable weight; use a "
                f"norm layer with one (BatchNorm2d, GroupNorm(affine=True)) or leave "
                f"zero_init_residual off"
            )
        nn.init.zeros_(weight)

    def extra_repr(self) -> str:
        return "" if self.residual else "residual=False"


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (He et al. 2015, Fig. 5 left). Used by ResNet-18/34 and the CIFAR nets."""

    expansion: ClassVar[int] = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "B",
        norm_layer: NormLayer | None = None,
        *,
        residual: bool = True,
    ) -> None:
        super().__init__(inplanes, planes, stride, shortcut, norm_layer, residual=residual)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = self.norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = self.norm_layer(planes)
        self.downsample = self.make_downsample()  # last: torchvision's state_dict order

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        return self.bn2(self.conv2(out))  # (B, planes, H/s, W/s)

    def after_addition(self, out: torch.Tensor) -> torch.Tensor:
        return self.relu(out)  # post-activation: the ReLU comes after the addition

    def last_layer(self) -> nn.Module:
        return self.bn2


class Bottleneck(ResidualBlock):
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
        *,
        residual: bool = True,
    ) -> None:
        super().__init__(inplanes, planes, stride, shortcut, norm_layer, residual=residual)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = self.norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = self.norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = self.norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = self.make_downsample()  # last: torchvision's state_dict order

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H/s, W/s)
        return self.bn3(self.conv3(out))  # (B, 4*planes, H/s, W/s)

    def after_addition(self, out: torch.Tensor) -> torch.Tensor:
        return self.relu(out)  # post-activation: the ReLU comes after the addition

    def last_layer(self) -> nn.Module:
        return self.bn3


class PreActBlock(ResidualBlock):
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
        *,
        residual: bool = True,
    ) -> None:
        super().__init__(inplanes, planes, stride, shortcut, norm_layer, residual=residual)
        self.bn1 = self.norm_layer(inplanes)
        self.relu = nn.ReLU(inplace=False)  # x itself is reused by the shortcut
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = self.norm_layer(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = self.make_downsample()  # last, as in the other blocks

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))  # (B, planes, H/s, W/s)
        return self.conv2(self.relu(self.bn2(out)))  # (B, planes, H/s, W/s)

    def after_addition(self, out: torch.Tensor) -> torch.Tensor:
        return out  # x_{l+1} = x_l + F(x_l), nothing after the addition (Eq. 3)

    def last_layer(self) -> nn.Module:
        # not bn2: a zero gamma feeds ReLU(0), whose gradient is 0, so the branch never learns
        return self.conv2


class PlainBasicBlock(BasicBlock):
    """`BasicBlock` without its shortcut, y = ReLU(F(x)): the blocks of He et al.'s plain nets
    (Fig. 3, middle), and what `cifar_resnet(..., residual=False)` builds. The same layers,
    names and state_dict as `BasicBlock(..., residual=False)`; a class of its own so that
    `isinstance(m, PlainBasicBlock)` finds them: `BasicBlock(..., residual=False)` makes one too."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, shortcut: str = "B",
                 norm_layer: NormLayer | None = None, *, residual: bool = False) -> None:
        _refuse_shortcut(type(self), residual)
        super().__init__(inplanes, planes, stride, shortcut, norm_layer, residual=False)


class PlainBottleneck(Bottleneck):
    """`Bottleneck` without its shortcut (see `PlainBasicBlock`)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, shortcut: str = "B",
                 norm_layer: NormLayer | None = None, *, residual: bool = False) -> None:
        _refuse_shortcut(type(self), residual)
        super().__init__(inplanes, planes, stride, shortcut, norm_layer, residual=False)


class PlainPreActBlock(PreActBlock):
    """`PreActBlock` without its shortcut, y = F(x) (see `PlainBasicBlock`)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, shortcut: str = "B",
                 norm_layer: NormLayer | None = None, *, residual: bool = False) -> None:
        _refuse_shortcut(type(self), residual)
        super().__init__(inplanes, planes, stride, shortcut, norm_layer, residual=False)


def _refuse_shortcut(cls: type, residual: object) -> None:
    if residual is not False:
        raise ValueError(f"a {cls.__name__} has no shortcut: residual must be False, got "
                         f"{residual!r}; use {cls.__mro__[1].__name__} for the residual block")


PLAIN_TWIN: dict[type[ResidualBlock], type[ResidualBlock]] = {
    BasicBlock: PlainBasicBlock, Bottleneck: PlainBottleneck, PreActBlock: PlainPreActBlock}
