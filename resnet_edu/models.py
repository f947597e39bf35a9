"""ResNet models: torchvision's ImageNet family and the CIFAR nets of the 2015 paper.

- `resnet18` ... `resnet152`: state_dict keys, shapes and outputs identical to torchvision's
  (tests load their weights into ours and back with strict=True).
- `resnet18_cifar`: ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 images;
  `width` scales every stage (64 is the standard net).
- `cifar_resnet(depth)`: the 6n+2 family of He et al. 2015, Sec. 4.2 (ResNet-20 ... 110),
  16/32/64 channels, and with `residual=False` the plain net of the same depth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import BasicBlock, Bottleneck, PreActBlock, ResidualBlock
from .checks import check_images, check_int
from .shortcuts import NormLayer, check_shortcut_option

INITS = ("kaiming", "default")


def make_layer(
    block: type[ResidualBlock],
    inplanes: int,
    planes: int,
    blocks: int,
    stride: int,
    shortcut: str,
    norm_layer: NormLayer,
    residual: bool = True,
) -> nn.Sequential:
    """One stage: the first block changes stride/width, the rest keep them. A plain stage
    (`residual=False`) is built of the block's plain twin (`PlainBasicBlock`, ...)."""
    layers = [block(inplanes, planes, stride, shortcut, norm_layer, residual=residual)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, 1, shortcut, norm_layer,
                            residual=residual))
    return nn.Sequential(*layers)


class ResNetBase(nn.Module):
    """What `ResNet` and `CifarResNet` share: the argument checks, the options every block
    gets, and the weight init. Each subclass writes out its own stem, stages and forward."""

    def __init__(
        self,
        block: type[ResidualBlock],
        num_classes: int,
        *,
        width: int,
        shortcut: str,
        residual: bool,
        norm_layer: NormLayer | None,
        init: str,
        in_channels: int,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("width", width),
                            ("in_channels", in_channels)):
            check_int(name, value, low=1)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if not (isinstance(block, type) and issubclass(block, ResidualBlock)):
            # only a ResidualBlock takes residual=False and drops its shortcut for it
            raise ValueError(
                "block must be a ResidualBlock subclass (BasicBlock, Bottleneck, PreActBlock),"
                f" which knows how to drop its shortcut for residual=False; got {block!r}"
            )
        self.in_channels, self.num_classes = in_channels, num_classes
        self.norm_layer = norm_layer or nn.BatchNorm2d
        self.block = block
        # what every block of every stage gets (the net itself has no `residual` attribute:
        # the gradient tools mark blocks by it)
        self.block_options = {"shortcut": check_shortcut_option(shortcut),
                              "norm_layer": self.norm_layer, "residual": residual}

    def _make_layer(self, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        """`make_layer` with this net's block, shortcut option, norm and residual switch."""
        return make_layer(self.block, inplanes, planes, blocks, stride, **self.block_options)

    def _init_weights(self, init: str, zero_init_residual: bool) -> None:
        """Kaiming-normal convs (He et al. 2015b, as torchvision does) or PyTorch's defaults."""
        for m in self.modules():
            if init == "kaiming" and isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # each residual block starts as the identity: F(x) = 0 (Goyal et al. 2017)
            for m in self.modules():
                if isinstance(m, ResidualBlock) and m.residual:
                    m.zero_init_last()


class ResNet(ResNetBase):
    """Stem, four stages `layer1..4`, global average pool, `fc` (torchvision's layout).

    stem="imagenet": 7x7 stride-2 conv + 3x3 stride-2 max-pool (224 -> 56 before layer1).
    stem="cifar": one 3x3 stride-1 conv and no max-pool (32 -> 32 before layer1), since a
    32x32 image cannot afford to lose 4x resolution before the first block.
    """

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        num_classes: int = 1000,
        *,
        width: int = 64,
        stem: str = "imagenet",
        shortcut: str = "B",
        residual: bool = True,
        norm_layer: NormLayer | None = None,
        zero_init_residual: bool = False,
        init: str = "kaiming",
        in_channels: int = 3,
    ) -> None:
        super().__init__(block, num_classes, width=width, shortcut=shortcut, residual=residual,
                         norm_layer=norm_layer, init=init, in_channels=in_channels)
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if len(layers) != 4:
            raise ValueError(f"layers must be 4 positive block counts, got {layers!r}")
        for i, n in enumerate(layers):
            check_int(f"layers[{i}]", n, low=1)

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = self.norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        e = block.expansion  # a stage's output has planes * e channels
        # stages 2-4 halve H and W and double the width
        self.layer1 = self._make_layer(width, width, layers[0], stride=1)
        self.layer2 = self._make_layer(width * e, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(2 * width * e, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(4 * width * e, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * e, num_classes)
        self._init_weights(init, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels, type(self).__name__, self.fc.weight.dtype)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, H/4, W/4) or (B, w, H, W)
        x = self.layer1(x)  # (B, w*e, ., .)
        x = self.layer2(x)  # (B, 2w*e, /2, /2)
        x = self.layer3(x)  # (B, 4w*e, /4, /4)
        x = self.layer4(x)  # (B, 8w*e, /8, /8)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 8w*e)
        return self.fc(x)  # (B, num_classes)


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18 (He et al. 2015, Table 1): 11,689,512 parameters at 1000 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34: 21,797,672 parameters."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50, bottleneck blocks: 25,557,032 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)


def resnet101(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-101: 44,549,160 parameters."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, **kwargs)


def resnet152(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-152: 60,192,808 parameters."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, **kwargs)


def resnet18_cifar(num_classes: int = 10, width: int = 64, **kwargs) -> ResNet:
    """ResNet-18 for 32x32 inputs: 3x3 stem, no max-pool; 11,173,962 parameters at width 64."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, width=width, stem="cifar", **kwargs)


class CifarResNet(ResNetBase):
    """The CIFAR-10 nets of He et al. 2015, Sec. 4.2: 6n+2 layers.

    A 3x3 conv, then three stages of n blocks on 32x32, 16x16, 8x8 maps with 16, 32, 64
    filters (times width/16), global average pool, a 10-way fc. With `preact=True` the
    blocks are `PreActBlock`s and one BN + ReLU follows the last stage (He et al. 2016).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        *,
        residual: bool = True,
        shortcut: str = "A",
        width: int = 16,
        preact: bool = False,
        norm_layer: NormLayer | None = None,
        zero_init_residual: bool = False,
        init: str = "kaiming",
        in_channels: int = 3,
    ) -> None:
        # not check_int: the message should name the 6n+2 rule whatever is wrong
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}"
            )
        block = PreActBlock if preact else BasicBlock
        super().__init__(block, num_classes, width=width, shortcut=shortcut, residual=residual,
                         norm_layer=norm_layer, init=init, in_channels=in_channels)
        n = (depth - 2) // 6  # blocks per stage: 2 convs each, 3 stages, + stem conv + fc
        self.depth, self.preact = depth, preact

        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        if not preact:  # a pre-activation net normalizes inside its first block instead
            self.bn1 = self.norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(width, width, n, stride=1)
        self.layer2 = self._make_layer(width, 2 * width, n, stride=2)
        self.layer3 = self._make_layer(2 * width, 4 * width, n, stride=2)
        if preact:  # its blocks end in a conv: the net adds the last BN + ReLU (He et al. 2016)
            self.final_norm = self.norm_layer(4 * width)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(4 * width, num_classes)
        self._init_weights(init, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels, type(self).__name__, self.fc.weight.dtype)
        x = self.conv1(x)  # (B, w, 32, 32)
        if not self.preact:
            x = self.relu(self.bn1(x))
        x = self.layer1(x)  # (B, w, 32, 32)
        x = self.layer2(x)  # (B, 2w, 16, 16)
        x = self.layer3(x)  # (B, 4w, 8, 8)
        if self.preact:
            x = self.relu(self.final_norm(x))
        x = torch.flatten(self.avgpool(x), 1)  # (B, 4w)
        return self.fc(x)  # (B, num_classes)


def cifar_resnet(
    depth: int = 20, residual: bool = True, shortcut: str = "A", **kwargs
) -> CifarResNet:
    """ResNet-`depth` for CIFAR-10 (or the plain net with residual=False). Option A by default,
    as the paper uses on CIFAR: ResNet-20/32/44/56/110 have 0.27M/0.46M/0.66M/0.85M/1.7M
    parameters (Table 6)."""
    return CifarResNet(depth, residual=residual, shortcut=shortcut, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
