"""Small buggy ResNet pieces, each with one planted mistake, for notebook 05 and its tests.

Every mistake here is one that real ResNet code makes; none of them is copied from
anywhere. Most of them do not crash: they cost accuracy, parameters or compute, or nothing
at all in a shallow net and much in a deep one. Each class says what is
wrong in its docstring, under the number of the notebook's suspect; the notebook prints only
`__init__` and `forward`, and calls each one by its neutral name in `SUSPECTS`, so the
student looks before being told. `diagnose` (`resnet_edu.diagnostics`) finds every one that
can be seen from a forward and a backward pass. The blocks take `(in_channels, out_channels,
stride)`, like
`resnet_edu.blocks.BasicBlock(inplanes, planes, stride)`, so `TinyResNet` can stack either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..checks import check_int
from ..modes import mode

BlockFactory = Callable[[int, int, int], nn.Module]


class TinyResNet(nn.Module):
    """A small CIFAR-style ResNet built from any block: 3x3 stem, one stage per width.

    Stage i has `depth` blocks; the first block of every stage after the first halves H and W
    (stride 2) and changes the width, as in He et al. 2015, Sec. 4.2.
    """

    def __init__(self, block: BlockFactory, widths: Sequence[int] = (16, 32, 64),
                 depth: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one stage width, got none")
        for i, w in enumerate(widths):
            check_int(f"widths[{i}]", w, low=1)
        check_int("depth", depth, low=1)
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, inplanes = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(inplanes, width, stride))
                inplanes = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, w0, H, W)
        x = self.layers(x)  # (B, w_last, H/2^(stages-1), W/2^(stages-1))
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


def _conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    """The correct option-B projection: 1x1 conv with the block's stride, then BatchNorm."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class _TwoConvBlock(nn.Module):
    """What every block below shares: the main path conv-BN-ReLU-conv-BN (a BasicBlock's F)
    and the forward y = ReLU(F(x) + shortcut(x)). A subclass sets `self.shortcut` (and
    overrides `forward` only where the mistake is in it)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 bias: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride, bias)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels, 1, bias)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def main_path(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, out, H/s, W/s)
        return self.bn2(self.conv2(out))  # (B, out, H/s, W/s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.main_path(x) + self.shortcut(x))  # (B, out, H/s, W/s)


class ForgetfulBlock(_TwoConvBlock):
    """Suspect 1: forward reads `self.in_channels`, which __init__ never stored.

    The `or` short-circuits where stride != 1, so stride-2 blocks work and only the
    stride-1 blocks crash, with an AttributeError.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.out_channels, self.stride = out_channels, stride
        needed = stride != 1 or in_channels != out_channels
        self.shortcut = _projection(in_channels, out_channels, stride) if needed else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1 or self.in_channels != self.out_channels:
            identity = self.shortcut(x)
        else:
            identity = x
        return self.relu(self.main_path(x) + identity)


class StrideOneShortcutBlock(_TwoConvBlock):
    """Suspect 2: the shortcut's conv has stride 1 and a ReLU, and no BatchNorm.

    Where the main path has stride 2, the shortcut keeps H and W, so F(x) + x fails.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False), nn.ReLU())


class ReluShortcutBlock(_TwoConvBlock):
    """Suspect 2 without the crash: the right stride, but a ReLU inside the projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(_projection(in_channels, out_channels, stride),
                                          nn.ReLU())


class AlwaysProjectBlock(_TwoConvBlock):
    """Suspect 3: a projection is built for every block, even where shapes already match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _projection(in_channels, out_channels, stride)


class BiasBeforeNormBlock(_TwoConvBlock):
    """Suspect 4: the convs keep PyTorch's default bias=True, right before BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _projection(in_channels, out_channels, stride)


class GoodBlock(_TwoConvBlock):
    """No mistake: the reference the buggy blocks differ from (a BasicBlock, option B)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _projection(in_channels, out_channels, stride)


class DetachedShortcutBlock(GoodBlock):
    """Suspect 10: the shortcut takes a detached copy of x.

    `x.clone().detach()` looks like a safe copy, but it also cuts the shortcut out of the
    autograd graph: the gradient can only come back through F (He et al. 2016, Eq. 5 loses
    its "1 +" term). Unlike a plain net's, it vanishes over a deep stack: the forward pass
    still adds x, so the activations grow and each branch's BatchNorm divides by a growing
    standard deviation, which shrinks the branch's Jacobian.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x.clone().detach()  # meant as "a copy, safe from in-place ops"
        return self.relu(self.main_path(x) + self.shortcut(identity))


class SoftmaxResNet(TinyResNet):
    """Suspect 5: forward returns probabilities, and the loss is CrossEntropyLoss."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)  # (B, num_classes)


class MisnamedSuperBlock(GoodBlock):
    """Suspect 6a: `super(...)` names a class this one does not derive from.

    The class is defined without trouble; creating one raises a TypeError.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super(ForgetfulBlock, self).__init__(in_channels, out_channels, stride)


class LateSuperResNet(nn.Module):
    """Suspect 6b: layers are assigned before `super().__init__()` has run.

    nn.Module's bookkeeping (the dict of submodules) does not exist yet, so the first
    `self.conv1 = ...` raises an AttributeError.
    """

    def __init__(self, num_classes: int = 10) -> None:
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        super().__init__()
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv1(x).mean(dim=(2, 3)))


# Suspect 8: predicted classes without `model.eval()` and without `torch.no_grad()`. BatchNorm
# keeps normalizing with the current batch's statistics (and updating its running averages),
# so an image's prediction depends on the rest of its batch. (The docstring stays neutral:
# notebook 05 prints the source before it says what is wrong.)
def predict_classes(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The predicted class of each image: (B, 3, H, W) -> (B,)."""
    return model(images).argmax(dim=1)  # (B,)


evaluate_forgetting_eval = predict_classes  # the name that says what is wrong with it


def evaluate_correctly(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted classes in eval mode without autograd; the model's mode is put back."""
    with mode(model, train=False), torch.no_grad():
        return model(images).argmax(dim=1)  # (B,)


# One planted mistake per entry: the block (or model) and the check that must find it.
PLANTED = {
    "ForgetfulBlock": "forward-error",
    "StrideOneShortcutBlock": "shape-mismatch",
    "ReluShortcutBlock": "shortcut-activation",
    "AlwaysProjectBlock": "unneeded-projection",
    "BiasBeforeNormBlock": "bias-before-norm",
    "DetachedShortcutBlock": "gradient-flow",
    "SoftmaxResNet": "softmax-output",
}


class CopiedBlock(nn.Module):
    """The exercise of notebook 05: four of the suspects' mistakes in one block, with the
    attribute names of `GoodBlock`, which the student's fix must match (with copied weights).

    Biases before BatchNorm (suspect 4), a projection on every block (3) with a ReLU in it
    (2), and a detached shortcut (10).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x.clone().detach()))


# Notebook 05's suspects by number, so that no cell names the mistake before the student has
# looked for it (6 is a pair of classes).
SUSPECTS = {
    1: ForgetfulBlock,
    2: StrideOneShortcutBlock,
    3: AlwaysProjectBlock,
    4: BiasBeforeNormBlock,
    5: SoftmaxResNet,
    6: (MisnamedSuperBlock, LateSuperResNet),
    8: predict_classes,
    10: DetachedShortcutBlock,
}
