"""Fixtures the unit tests of several modules share."""

import pytest
import torch

from resnet_edu.data import load_sample

GPUS = {"T4": (7, 5), "V100": (7, 0), "A100": (8, 0), "RTX 3090": (8, 6), "H100": (9, 0)}


@pytest.fixture
def gpu(monkeypatch):
    """Pretend CUDA device 0 is the named GPU. `is_bf16_supported` says True for all of
    them, as PyTorch does for emulated bf16, so code that trusted it would pick bf16."""
    def use(name: str) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: GPUS[name])
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"NVIDIA {name}")
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return use


@pytest.fixture(scope="session")
def sample():
    """The CIFAR-10 sample that ships with the package, loaded once."""
    return load_sample()
