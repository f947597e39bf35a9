"""Checking arguments and inputs, the one home for these rules: each check raises one error
that names the argument, says what was expected and shows what came.

    check_int("seed", seed, low=0, high=SEED_MAX)
    check_int("width", width, low=1)                  # a count: channels, blocks, classes
    check_float("lr", lr, low=0, low_open=True)       # finite and > 0
    check_device("gpu")                               # ValueError: ... use 'cuda', 'mps' or 'cpu'
    check_images(x, 3, "ResNet", torch.float32)       # a float32 batch (B, 3, H, W)
"""

from __future__ import annotations

import math
import numbers

import torch

SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit


class ArgumentError(ValueError):
    """A bad argument: `name` (what the caller called it) and `requirement` ("must be ...,
    got ..."). A front end that calls the argument something else, such as the command line's
    `--epochs` for `epochs`, says so with `renamed`."""

    def __init__(self, name: str, requirement: str) -> None:
        super().__init__(f"{name} {requirement}")
        self.name, self.requirement = name, requirement

    def renamed(self, name: str) -> ArgumentError:
        return ArgumentError(name, self.requirement)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None,
              ) -> int:
    """`value` if it is an int in [low, high]; bools and floats like 10.5 are refused."""
    expected = f"must be an integer {_interval(low, high, False, False)}".rstrip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(name, f"{expected}, got {value!r} ({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ArgumentError(name, f"{expected}, got {value!r}")
    return int(value)


def check_float(name: str, value: object, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float if it is a finite real number in the interval (nan and inf are not)."""
    expected = f"must be a finite number {_interval(low, high, low_open, high_open)}".rstrip()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(name, f"{expected}, got {value!r} ({type(value).__name__})")
    v = float(value)
    outside = (not math.isfinite(v)
               or (low is not None and (v <= low if low_open else v < low))
               or (high is not None and (v >= high if high_open else v > high)))
    if outside:
        raise ArgumentError(name, f"{expected}, got {value!r}")
    return v


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """The `torch.device` for `device` if this machine has it (cuda, cuda:1, mps, cpu)."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} must be 'cuda', 'mps' or 'cpu' (or 'cuda:N'), "
                         f"got {device!r}") from None
    if d.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} {str(d)!r}: PyTorch sees no CUDA GPU on this machine; "
                             "use 'cpu' (or leave the device out to pick the best one)")
        if d.index is not None and d.index >= count:
            raise ValueError(f"{name} {str(d)!r}: this machine has {count} CUDA GPU(s), "
                             f"numbered 0..{count - 1}")
    elif d.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps and mps.is_available()):
            raise ValueError(f"{name} 'mps': Apple's MPS is not available on this machine; "
                             "use 'cpu' (or leave the device out to pick the best one)")
    elif d.type != "cpu":
        raise ValueError(f"{name} must be 'cuda', 'mps' or 'cpu' (or 'cuda:N'), got {device!r}")
    return d


def check_float_images(x: torch.Tensor, where: str) -> None:
    """Raise a TypeError unless `x` holds floating-point values (a network computes in
    floats; images stored as uint8 bytes must be converted first)."""
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        hint = (" convert with `.float() / 255` (then normalize, e.g. with "
                "resnet_edu.data.normalize)" if x.dtype == torch.uint8 else
                " convert with `.float()`")
        raise TypeError(f"{where} expects floating-point images, got {x.dtype}:{hint}")


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


def check_images(x: torch.Tensor, channels: int, where: str,
                 dtype: torch.dtype | None = None) -> None:
    """What a model checks first, once, at its `forward`: a float image batch (B, channels,
    H, W), and, given the model's `dtype`, of that dtype (under autocast the conversion is
    autocast's job, so the dtype is not checked there). The blocks inside trust it."""
    check_batch(x, channels, where)
    check_float_images(x, where)
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{where} has {dtype} weights and expects {dtype} images, got "
                        f"{x.dtype}: convert the images with `.to({dtype})`, or the model "
                        f"with `model.to({x.dtype})`, or run it under `torch.autocast`")
