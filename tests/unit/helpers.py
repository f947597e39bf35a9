"""Small nets and a recipe that several unit-test files build on (imported as `helpers`:
pytest puts this folder on sys.path, as it has no __init__.py)."""

from __future__ import annotations

import torch
from torch import nn

from resnet_edu.models import resnet18_cifar
from resnet_edu.recipe import TrainConfig

# two short epochs on 192 images at width 4: the trainer's every rule, in seconds
TINY = TrainConfig(name="tiny", width=4, epochs=2, batch_size=64, lr=0.1, train_subset=192,
                   eval_batch_size=256, tta=True, amp="off", min_resolution=24,
                   full_resolution_epochs=1)


def tiny_model() -> nn.Module:
    """A width-4 ResNet-18, the same weights on every call."""
    torch.manual_seed(0)
    return resnet18_cifar(width=4)


class Branch(nn.Module):
    """conv-BN-ReLU-conv-BN, as a module of its own."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Adds(nn.Module):
    """One block whose forward is given as a function of (self, x): a branch `f` and a 1x1
    projection `proj` to combine in any style."""

    def __init__(self, forward):
        super().__init__()
        self.f = Branch()
        self.proj = nn.Conv2d(4, 4, 1, bias=False)
        self._forward = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)
