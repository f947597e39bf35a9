"""The quick switch, the device choice, and widgets' static fallback."""

import torch

from resnet_edu import notebook, runtime


def test_quick_mode_follows_ci(monkeypatch):
    monkeypatch.delenv("RESNET_EDU_QUICK", raising=False)
    monkeypatch.setenv("CI", "true")
    assert runtime.quick_mode()
    monkeypatch.setenv("CI", "")
    assert not runtime.quick_mode()
    monkeypatch.setenv("RESNET_EDU_QUICK", "1")
    assert runtime.quick_mode()


def test_default_device_and_report():
    expected = "cuda" if torch.cuda.is_available() else None
    device = runtime.default_device()
    assert device.type in {"cuda", "mps", "cpu"}
    if expected:
        assert device.type == expected
    report = runtime.environment_report()
    assert report["torch"] == torch.__version__ and report["device"] == device.type


def test_seed_everything_repeats():
    runtime.seed_everything(3)
    a = torch.rand(3)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.rand(3))


def test_static_fallback_draws_once_with_defaults(monkeypatch):
    monkeypatch.setenv("RESNET_EDU_STATIC", "1")
    calls = []
    notebook.interactive_figure(
        lambda depth, scale, kind, bn: calls.append((depth, scale, kind, bn)),
        depth=(2, 50, 4), scale=(0.5, 1.5, 0.25), kind=["plain", "residual"], bn=True,
        defaults={"bn": False},
    )
    assert calls == [(26, 1.0, "plain", False)]
    assert not notebook.live_widgets()
