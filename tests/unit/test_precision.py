"""Mixed precision: which dtype autocast uses on which hardware, fp16's gradient scaler, the
refusals with their reason."""


import pytest
import torch

from resnet_edu import precision, runtime
from resnet_edu.precision import needs_grad_scaler, resolve_amp
from resnet_edu.runtime import cpu_has_native_bf16


def test_amp_resolution_is_guarded():
    cpu = torch.device("cpu")
    native = torch.bfloat16 if cpu_has_native_bf16() else None
    assert resolve_amp("auto", cpu) is native and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="amp"):
        resolve_amp("fp8", cpu)


CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("name, dtype", [("T4", torch.float16), ("V100", torch.float16),
                                         ("A100", torch.bfloat16), ("H100", torch.bfloat16)])
def test_auto_amp_on_cuda_bf16_where_native_else_fp16_with_a_scaler(gpu, name, dtype):
    gpu(name)
    chosen = resolve_amp("auto", CUDA)
    assert chosen == dtype
    assert needs_grad_scaler(chosen) == (dtype == torch.float16)


def test_explicit_bf16_on_an_old_gpu_is_refused_with_the_reason(gpu):
    gpu("T4")
    with pytest.raises(ValueError, match=r"compute capability >= 8.0, got 7.5 \(NVIDIA T4\)"):
        resolve_amp("bf16", CUDA)
    assert resolve_amp("fp16", CUDA) == torch.float16


@pytest.mark.parametrize("native", [True, False])
def test_auto_amp_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
    assert resolve_amp("bf16", torch.device("cpu")) == torch.bfloat16  # asked for: allowed
    assert resolve_amp("off", torch.device("cpu")) is None


def test_mps_gets_float32_and_refuses_fp16_and_bf16():
    mps = torch.device("mps")
    assert resolve_amp("auto", mps) is None
    with pytest.raises(ValueError, match="fp16' needs a CUDA device, got mps"):
        resolve_amp("fp16", mps)
    with pytest.raises(ValueError, match="bf16' needs a CUDA GPU or a CPU, got mps"):
        resolve_amp("bf16", mps)


def test_only_fp16_needs_a_gradient_scaler():
    assert needs_grad_scaler(torch.float16)
    assert not needs_grad_scaler(torch.bfloat16) and not needs_grad_scaler(None)


def test_runtime_exports_what_the_precision_module_uses():
    assert precision.cuda_has_native_bf16 is runtime.cuda_has_native_bf16
