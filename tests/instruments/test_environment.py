"""environment(): the machine beside every figure, described without importing torch."""
import subprocess
import sys

import pytest

from optlab.instruments.environment import (
    GPU_FIELDS,
    SPEED_FLAGS,
    Environment,
    _nvml_index,
    environment,
    gpu_info,
    nvml_gpu_info,
    physical_cores,
)


def test_environment_describes_cpu_and_versions():
    env = environment()
    assert env.cpu_model and env.cores == physical_cores() >= 1 and env.logical_cores >= env.cores
    assert all(flag in SPEED_FLAGS for flag in env.cpu_flags.split())
    assert env.torch_version and env.onnxruntime_version and env.device == "cpu" and env.gpu_name is None
    assert Environment.from_dict(env.to_dict()) == env


def test_describing_never_imports_torch():
    code = ("import sys; from optlab.instruments.environment import environment; environment('cuda'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def test_gpu_fields_are_none_without_a_gpu():
    env = environment("cpu")
    assert all(getattr(env, name) is None for name in GPU_FIELDS)
    if not _cuda_available():  # a CPU-only machine: asking for "cuda" still describes, with no GPU
        cuda = environment("cuda:0")
        assert cuda.device == "cuda:0" and all(getattr(cuda, name) is None for name in GPU_FIELDS)
        assert gpu_info("cuda") == dict.fromkeys(GPU_FIELDS)
    old = {k: v for k, v in env.to_dict().items() if k not in GPU_FIELDS[1:]}  # a row stored before GPU fields
    assert Environment.from_dict(old) == env


def test_importing_optlab_imports_neither_torch_nor_nvml():
    code = ("import sys, optlab; from optlab.instruments.environment import environment; environment('cpu'); "
            "print('torch' in sys.modules, 'pynvml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_nvml_index_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert (_nvml_index(0), _nvml_index(1), _nvml_index(5)) == (2, 3, 5)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    assert _nvml_index(0) == "GPU-1234"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _nvml_index(1) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs CUDA")
def test_gpu_environment_names_model_driver_clocks_and_temperature():
    import torch

    torch.zeros(1, device="cuda")
    env = environment("cuda")
    assert env.gpu_name and env.gpu_memory_mb > 1000 and env.gpu_compute_capability
    if nvml_gpu_info("cuda"):  # nvidia-ml-py installed: the NVML readings are there too
        assert env.gpu_driver and env.gpu_sm_clock_max_mhz >= env.gpu_sm_clock_mhz > 0
        assert 0 < env.gpu_temperature_c < 120 and env.gpu_memory_clock_mhz > 0
