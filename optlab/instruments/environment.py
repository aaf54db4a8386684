"""Where a figure was measured: CPU model and flags, cores, library versions, device.

Every latency figure is recorded next to this, because the same model runs at very
different speeds on CPUs with and without AVX-512 VNNI, AMX or bf16 support. Versions
come from package metadata, so describing the environment never imports torch.

On a CUDA device the GPU's model, driver, memory, clocks (now and maximum), temperature and
power are read through NVML (`pynvml`, from the nvidia-ml-py package) when it is installed,
imported only then; without it, from torch if torch is already imported (name, memory,
compute capability). Without a GPU every GPU field is None.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

# psutil and pynvml are imported on use: optional (pynvml only on NVIDIA machines), and a missing one
# means a figure is not available, not an error.

# The instruction-set flags that change inference speed (x86 and Arm names as Linux spells them).
SPEED_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
    "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16",
)


@dataclass(frozen=True)
class Environment:
    """The machine and software a measurement ran on."""

    cpu_model: str
    cpu_flags: str  # space-separated subset of SPEED_FLAGS present on this CPU
    cores: int  # physical cores
    logical_cores: int
    torch_version: str | None
    onnxruntime_version: str | None
    python_version: str
    platform: str
    device: str
    gpu_name: str | None = None
    gpu_driver: str | None = None
    gpu_memory_mb: float | None = None  # total device memory
    gpu_compute_capability: str | None = None  # "9.0" (torch only)
    gpu_sm_clock_mhz: int | None = None  # when described: a GPU at rest reads its idle clock
    gpu_sm_clock_max_mhz: int | None = None
    gpu_memory_clock_mhz: int | None = None
    gpu_temperature_c: int | None = None
    gpu_power_w: float | None = None
    gpu_power_limit_w: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Environment":
        return cls(**data)


def physical_cores() -> int:
    """Physical cores (the default thread count for inference); logical count if unknown."""
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
    except ImportError:  # psutil is a dependency; stay usable without it
        count = None
    return int(count or os.cpu_count() or 1)


def package_version(name: str) -> str | None:
    """The installed version of a distribution (`torch`, `onnxruntime`), or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU model name and every flag the kernel reports (read once from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and model in ("", platform.processor(), platform.machine()):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = frozenset(value.split())
    except OSError:  # not Linux: keep what platform says
        pass
    return model or "unknown", flags


GPU_FIELDS = ("gpu_name", "gpu_driver", "gpu_memory_mb", "gpu_compute_capability", "gpu_sm_clock_mhz",
              "gpu_sm_clock_max_mhz", "gpu_memory_clock_mhz", "gpu_temperature_c", "gpu_power_w", "gpu_power_limit_w")


def _device_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def _nvml_index(cuda_index: int) -> int | str:
    """CUDA's index -> NVML's (they differ under CUDA_VISIBLE_DEVICES); a UUID is returned as is."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if cuda_index < len(visible):
        entry = visible[cuda_index]
        return int(entry) if entry.isdigit() else entry
    return cuda_index


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_gpu_info(device: str = "cuda") -> dict[str, Any]:
    """GPU fields read through NVML, or {} when NVML (nvidia-ml-py, or the driver) is missing.
    Each reading that the device does not support is left out, not guessed."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver (NVMLError_LibraryNotFound/DriverNotLoaded): no GPU here
        return {}
    try:
        index = _nvml_index(_device_index(device))
        handle = (pynvml.nvmlDeviceGetHandleByUUID(index) if isinstance(index, str)
                  else pynvml.nvmlDeviceGetHandleByIndex(index))
        readings = {
            "gpu_name": lambda: _text(pynvml.nvmlDeviceGetName(handle)),
            "gpu_driver": lambda: _text(pynvml.nvmlSystemGetDriverVersion()),
            "gpu_memory_mb": lambda: round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20, 1),
            "gpu_sm_clock_mhz": lambda: int(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            "gpu_sm_clock_max_mhz": lambda: int(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            "gpu_memory_clock_mhz": lambda: int(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
            "gpu_temperature_c": lambda: int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            "gpu_power_w": lambda: round(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 1),
            "gpu_power_limit_w": lambda: round(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0, 1),
        }
        info: dict[str, Any] = {}
        for name, read in readings.items():
            try:
                info[name] = read()
            except Exception:  # noqa: BLE001 - NVMLError_NotSupported on this device: leave it out
                pass
        return info
    except Exception:  # noqa: BLE001 - no such device index: nothing to report
        return {}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _torch_gpu_info(device: str) -> dict[str, Any]:
    # Only asks CUDA when torch is already imported: describing never pulls in torch.
    if "torch" not in sys.modules:
        return {}
    torch = sys.modules["torch"]
    try:
        if not torch.cuda.is_available():
            return {}
        props = torch.cuda.get_device_properties(torch.device(device))
        return {"gpu_name": str(props.name), "gpu_memory_mb": round(props.total_memory / 2**20, 1),
                "gpu_compute_capability": f"{props.major}.{props.minor}"}
    except Exception:  # noqa: BLE001 - no CUDA driver here: unknown, not an error
        return {}


def gpu_info(device: str) -> dict[str, Any]:
    """Every GPU field (None where unknown) for `device`; all None unless it is a CUDA device."""
    info = dict.fromkeys(GPU_FIELDS)
    if not device.startswith("cuda"):
        return info
    torch_info = _torch_gpu_info(device)
    info.update(torch_info)
    info.update(nvml_gpu_info(device))
    if torch_info.get("gpu_name"):
        info["gpu_name"] = torch_info["gpu_name"]  # CUDA's own name for the device it runs on
    return info


def environment(device: str = "cpu") -> Environment:
    """Describe this machine for a measurement on `device` ("cpu", "cuda", "cuda:0")."""
    model, flags = cpu_info()
    return Environment(
        cpu_model=model,
        cpu_flags=" ".join(flag for flag in SPEED_FLAGS if flag in flags),
        cores=physical_cores(),
        logical_cores=int(os.cpu_count() or 1),
        torch_version=package_version("torch"),
        onnxruntime_version=package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        device=device,
        **gpu_info(device),
    )
