"""Where the code runs: the device, the seed, whether to use quick settings, and whether a
notebook front end can show live widgets.

`quick_mode()` is the one switch notebooks read near the top: under CI (the `CI`
environment variable) or with `RESNET_EDU_QUICK=1`, long work uses its small setting.
"""

from __future__ import annotations

import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_flag(name: str) -> bool:
    """True when the environment variable `name` is set to 1, true, yes or on."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def quick_mode() -> bool:
    """True under CI or with RESNET_EDU_QUICK=1: long runs switch to their quick setting."""
    return env_flag("CI") or env_flag("RESNET_EDU_QUICK")


def live_widgets() -> bool:
    """True when a notebook front end can show widgets.

    `RESNET_EDU_STATIC=1` or `CI` gives static figures, `RESNET_EDU_STATIC=0` forces live
    widgets; otherwise they are live inside a kernel (JupyterLab, Colab, VS Code).
    """
    forced = os.environ.get("RESNET_EDU_STATIC", "").strip().lower() in _FALSE
    if not forced and (env_flag("RESNET_EDU_STATIC") or env_flag("CI")):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    # a kernel (JupyterLab, Colab, VS Code) has one; a plain IPython terminal does not
    return forced or getattr(get_ipython(), "kernel", None) is not None


def in_colab() -> bool:
    return "google.colab" in sys.modules


def default_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cpu_flags(cpuinfo: str | Path) -> list[str]:
    try:
        with open(cpuinfo) as f:  # Linux; other systems report no flags
            return next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return []


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bfloat16 dot products natively (AVX512-BF16 or AMX).

    There, bf16 autocast roughly doubles CPU training speed; elsewhere it is emulated and
    slower than float32, so the trainer only uses it where this is true.
    """
    flags = _cpu_flags(cpuinfo)
    return "avx512_bf16" in flags or "amx_bf16" in flags


def channels_last_trains_safely(device: torch.device,
                                cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether training in channels_last memory format is safe on `device`.

    CUDA: yes (it is what tensor cores want). MPS: no (slower there). CPU: only with AVX-512.
    With torch 2.14's oneDNN on an AVX2-only CPU, the weight gradient of a 1x1 convolution in
    channels_last (the projection shortcut) hangs or crashes; contiguous tensors are fine.
    """
    if device.type == "cuda":
        return True
    return device.type == "cpu" and "avx512f" in _cpu_flags(cpuinfo)


NATIVE_BF16_CUDA = (8, 0)  # Ampere (A100, RTX 30xx) and newer have bf16 tensor cores


def cuda_has_native_bf16(device: torch.device | None = None) -> bool:
    """True when the CUDA GPU has bf16 in hardware: compute capability 8.0 or higher.

    Not `torch.cuda.is_bf16_supported()`: that also counts emulation, so it says True on a
    T4 (7.5) or V100 (7.0), where bf16 autocast runs slowly; those GPUs get fp16 instead.
    """
    return tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16_CUDA


def supports_float64(device: torch.device) -> bool:
    """False on Apple's MPS, which has no float64: double-precision work goes to the CPU."""
    return device.type != "mps"


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (all devices) for repeatable runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_name(device: torch.device | None = None) -> str:
    """A human-readable name for the device, e.g. 'NVIDIA H100' or
    'CPU: AMD EPYC (bf16: AVX512-BF16), 2 threads'."""
    device = device or default_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    threads = torch.get_num_threads()
    return f"CPU: {cpu_description()}, {threads} thread{'s' if threads != 1 else ''}"


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model and what it has for bf16, e.g. 'AMD EPYC (bf16: AVX512-BF16)': a CPU
    figure depends on both (bf16 autocast runs where it is native, float32 elsewhere)."""
    model = ""
    try:
        with open(cpuinfo) as f:  # Linux; elsewhere the platform's name
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    flags = _cpu_flags(cpuinfo)
    if not flags:
        return model
    native = [name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"))
              if flag in flags]
    return f"{model} (bf16: {' and '.join(native) if native else 'not native, float32'})"


def environment_report() -> dict[str, str]:
    """Versions and hardware, for the start of a notebook or a benchmark's JSON."""
    import torchvision

    device = default_device()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device.type,
        "device_name": device_name(device),
        "colab": str(in_colab()),
        "quick_mode": str(quick_mode()),
    }
