"""Mixed precision: which autocast dtype a device gets, and the context that applies it.

    dtype = resolve_amp("auto", device)   # bf16 where native, fp16 on older CUDA GPUs, else None
    with autocast(device, dtype):         # a no-op for None: plain float32
        loss = loss_fn(model(x), y)
    scaler_needed = needs_grad_scaler(dtype)   # fp16 only

bf16 keeps float32's exponent range, so it needs no loss scaling; fp16 does (Micikevicius et
al. 2018). On a CPU without native bf16 (AVX512-BF16 or AMX), bf16 is emulated and slower
than float32, so 'auto' trains in float32 there.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from .runtime import cpu_has_native_bf16, cuda_has_native_bf16

AMP_MODES = ("auto", "off", "bf16", "fp16")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device` (None: full float32).

    bf16 only where the hardware has it: CUDA GPUs of compute capability >= 8.0 and CPUs
    with AVX512-BF16 or AMX (`runtime.cuda_has_native_bf16`, `cpu_has_native_bf16`).
    'auto' picks bf16 there (no loss scaling needed); fp16 on older CUDA GPUs (T4, V100),
    which `fit` pairs with a `GradScaler`; float32 on other CPUs (emulated bf16 is slower
    than float32) and on MPS. 'bf16' asks for it anyway on a CPU (correct, if slow there);
    on a CUDA GPU without it or on MPS it is an error, as is 'fp16' off CUDA.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if device.type != "cuda":
            return None
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp='fp16' needs a CUDA device, got {device.type}; use 'bf16' or 'off'")
    if amp == "bf16" and device.type == "cuda" and not cuda_has_native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(f"amp='bf16' needs a CUDA GPU of compute capability >= 8.0, got "
                         f"{major}.{minor} ({torch.cuda.get_device_name(device)}); "
                         "use 'fp16' or 'auto'")
    if amp == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"amp='bf16' needs a CUDA GPU or a CPU, got {device.type}; use 'off'")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none."""
    return dtype == torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Mixed precision at `dtype` on `device` (from `resolve_amp`); None: plain float32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
