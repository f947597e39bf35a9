"""Device choices on hardware we do not have: the capabilities are faked with monkeypatch.

bf16 autocast only where the hardware has it (CUDA compute capability >= 8.0, CPUs with
AVX512-BF16 or AMX), fp16 with a gradient scaler on older CUDA GPUs, no float64 on MPS."""

import pytest
import torch

from resnet_edu import gradients
from resnet_edu.gradients import gradient_norms
from resnet_edu.runtime import (
    channels_last_trains_safely,
    cpu_has_native_bf16,
    cuda_has_native_bf16,
    supports_float64,
)

CUDA = torch.device("cuda", 0)


GPUS = ("T4", "V100", "A100", "RTX 3090", "H100")  # the kinds the `gpu` fixture fakes


@pytest.mark.parametrize("name", GPUS)
def test_native_bf16_on_cuda_means_compute_capability_8_or_more(gpu, name):
    gpu(name)
    assert cuda_has_native_bf16(CUDA) == (torch.cuda.get_device_capability(CUDA) >= (8, 0))


@pytest.mark.parametrize("flags, native", [
    ("fpu sse2 avx2 avx512f avx512_bf16 amx_tile", True),
    ("fpu sse2 avx2 amx_bf16 amx_tile", True),
    ("fpu sse2 avx2 avx512f avx512_vnni", False),
])
def test_cpu_native_bf16_reads_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(info) is native
    assert cpu_has_native_bf16(tmp_path / "absent") is False  # no /proc: not native


@pytest.mark.parametrize("flags, safe", [
    ("fpu sse2 avx2 avx512f avx512_bf16", True),
    ("fpu sse2 avx2 fma", False),  # AVX2 only: oneDNN's 1x1 weight gradient hangs there
])
def test_channels_last_training_only_where_it_is_safe(tmp_path, flags, safe):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert channels_last_trains_safely(torch.device("cpu"), info) is safe
    assert channels_last_trains_safely(CUDA, info)
    assert not channels_last_trains_safely(torch.device("mps"), info)
    assert not channels_last_trains_safely(torch.device("cpu"), tmp_path / "absent")


def test_no_float64_on_mps():
    assert not supports_float64(torch.device("mps"))
    assert supports_float64(torch.device("cpu")) and supports_float64(CUDA)


class NoFloat64(torch.Tensor):
    """A tensor that refuses float64 the way an MPS tensor does; `.cpu()` gives a plain one."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor).clone()
        if func is torch.Tensor.double or kwargs.get("dtype") == torch.float64:
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS "
                            "framework doesn't support float64. Please use float32 instead.")
        return super().__torch_function__(func, types, args, kwargs)


def test_gradient_norms_sum_in_float64_on_the_cpu_for_a_device_without_it(monkeypatch):
    g = torch.randn(3, 4)
    fake = g.clone().as_subclass(NoFloat64)
    with pytest.raises(TypeError, match="float64"):
        fake.double()  # the fake refuses, as MPS does
    monkeypatch.setattr(gradients, "supports_float64", lambda device: False)
    assert gradients._norm64(fake) == pytest.approx(float(g.double().norm()), rel=1e-12)
    assert gradients._norm64(None) == 0.0


def test_gradient_norms_unchanged_by_the_cpu_detour(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10))
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    direct = gradient_norms(model, x, y).norms()
    monkeypatch.setattr(gradients, "supports_float64", lambda device: False)
    assert gradient_norms(model, x, y).norms() == direct


@pytest.mark.parametrize("flags, expected", [
    ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "Intel Xeon X (bf16: AMX and AVX512-BF16)"),
    ("fpu avx2 avx512f avx512_bf16", "Intel Xeon X (bf16: AVX512-BF16)"),
    ("fpu avx2", "Intel Xeon X (bf16: not native, float32)"),
])
def test_the_cpu_description_names_the_model_and_its_bf16(tmp_path, flags, expected):
    from resnet_edu.runtime import cpu_description

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Intel Xeon X\nflags\t\t: {flags}\n")
    assert cpu_description(info) == expected
    assert cpu_description(tmp_path / "absent")  # no /proc: the platform's name, not empty


def test_the_cpu_name_counts_its_threads(monkeypatch):
    from resnet_edu.runtime import device_name

    for threads, text in ((1, ", 1 thread"), (2, ", 2 threads")):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        assert device_name(torch.device("cpu")).endswith(text)
