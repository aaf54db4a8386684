"""Where a figure was measured: CPU model and flags, cores, library versions, device.

Every latency figure is recorded next to this, because the same model runs at very
different speeds on CPUs with and without AVX-512 VNNI, AMX or bf16 support. Versions
come from package metadata, so describing the environment never imports torch.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

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


def _gpu_name(device: str) -> str | None:
    # Only asks CUDA when torch is already imported: describing never pulls in torch.
    if not device.startswith("cuda") or "torch" not in sys.modules:
        return None
    torch = sys.modules["torch"]
    try:
        return str(torch.cuda.get_device_name(torch.device(device)))
    except Exception:  # noqa: BLE001 - no CUDA driver here: the name is unknown, not an error
        return None


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
        gpu_name=_gpu_name(device),
    )
