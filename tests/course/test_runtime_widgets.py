"""The quick switch, the device choice, and widgets' static fallback."""

import importlib.metadata

import pytest
import torch
import torchvision  # noqa: F401 - imported before any test patches torch.cuda

from resnet_edu import runtime
from resnet_edu.course import widgets


def test_quick_mode_follows_ci(monkeypatch):
    monkeypatch.delenv("RESNET_EDU_QUICK", raising=False)
    monkeypatch.setenv("CI", "true")
    assert runtime.quick_mode()
    monkeypatch.setenv("CI", "")
    assert not runtime.quick_mode()
    monkeypatch.setenv("RESNET_EDU_QUICK", "1")
    assert runtime.quick_mode()


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has CUDA and/or MPS."""
    def pretend(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return pretend


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"),
                                                 (False, False, "cpu")])
def test_default_device_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda, mps)
    assert runtime.default_device() == torch.device(expected)


def test_environment_report_names_the_installed_versions_and_the_device(machine, monkeypatch):
    machine(False, False)
    monkeypatch.setenv("RESNET_EDU_QUICK", "1")
    report = runtime.environment_report()
    # the installed distributions' metadata, a second source besides the modules' __version__
    # (which may add a local build tag such as +cu130)
    for name in ("torch", "torchvision"):
        assert report[name].split("+")[0] == importlib.metadata.version(name).split("+")[0]
    assert report["device"] == "cpu" and report["quick_mode"] == "True"
    assert report["device_name"] == runtime.device_name(torch.device("cpu"))


def test_seed_everything_repeats():
    runtime.seed_everything(3)
    a = torch.rand(3)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.rand(3))


def test_static_fallback_draws_once_with_defaults(monkeypatch):
    monkeypatch.setenv("RESNET_EDU_STATIC", "1")
    calls = []
    widgets.interactive_figure(
        lambda depth, scale, kind, bn: calls.append((depth, scale, kind, bn)),
        depth=(2, 50, 4), scale=(0.5, 1.5, 0.25), kind=["plain", "residual"], bn=True,
        defaults={"bn": False},
    )
    assert calls == [(26, 1.0, "plain", False)]
    assert not widgets.live_widgets()
