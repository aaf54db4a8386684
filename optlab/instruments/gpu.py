"""GPU instruments: peak memory, batch size vs throughput up to the memory limit, host<->device
copies (pinned vs pageable) and their share of end-to-end latency, and energy per prediction.

Everything here times device work with `time_calls` and a `torch.cuda.synchronize` sync, so the
warm-up runs until the clocks have ramped (see `timing`). Energy comes from NVML's total-energy
counter (`pynvml`, from nvidia-ml-py) over a run of at least `ENERGY_MIN_S` seconds, with the
idle power read beside it. Without a GPU each entry point raises `GpuUnavailable` with a
one-line reason ("not available: ..."), and `cuda_status()` says why without raising.
torch and pynvml are imported inside the functions: importing this module costs nothing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from optlab.instruments.environment import _device_index, _nvml_index
from optlab.instruments.timing import LatencyStats, summarize, time_calls

ENERGY_MIN_S = 5.0  # NVML's energy counter moves in coarse steps: shorter runs read mostly noise
IDLE_SAMPLE_S = 1.0


class GpuUnavailable(RuntimeError):
    """A GPU measurement asked for on a machine (or build) without one; the message says why."""


def cuda_status() -> tuple[bool, str]:
    """(True, device name) when torch sees a CUDA device, else (False, why not)."""
    try:
        import torch
    except ImportError:
        return False, "needs CUDA: torch is not installed"
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return False, f"needs CUDA: torch {torch.__version__} ({build}) sees no CUDA device"
    return True, torch.cuda.get_device_name(0)


def require_cuda(what: str) -> Any:
    """torch, or GpuUnavailable('<what>: not available (needs CUDA: ...)')."""
    ok, why = cuda_status()
    if not ok:
        raise GpuUnavailable(f"{what}: not available ({why})")
    import torch

    return torch


def device_latency(fn: Callable[[], Any], *, budget_s: float = 1.0, min_samples: int = 20,
                   max_samples: int = 100_000) -> LatencyStats:
    """Latency of `fn()` (device work, inputs already on the device), synced around each call,
    after a warm-up that runs until the latency settles."""
    torch = require_cuda("device latency")
    run = time_calls(lambda _: fn(), [None], warmup="auto", min_samples=min_samples, max_samples=max_samples,
                     budget_s=budget_s, sync=torch.cuda.synchronize)
    return summarize(run.samples_ns)


# --- memory --------------------------------------------------------------------------

@dataclass(frozen=True)
class PeakMemory:
    """Device memory around one call: what was resident before (weights, inputs) and the peak."""

    resident_mb: float  # allocated before the call
    peak_allocated_mb: float  # highest allocation during the call
    peak_over_resident_mb: float  # what the call itself needed (activations, workspaces)
    peak_reserved_mb: float  # the caching allocator's peak reservation

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def peak_memory(fn: Callable[[], Any]) -> PeakMemory:
    """Peak allocated device memory during one `fn()` call (torch's caching allocator)."""
    torch = require_cuda("peak memory")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    mb = 2.0 ** 20
    return PeakMemory(round(resident / mb, 2), round(peak / mb, 2), round((peak - resident) / mb, 2),
                      round(reserved / mb, 2))


# --- batch size vs throughput ---------------------------------------------------------

@dataclass(frozen=True)
class BatchSweep:
    """Throughput per batch size, doubling until the memory limit (or `max_batch`)."""

    rows: list[dict[str, Any]]  # batch_size, p50_ms, throughput_per_s, peak_allocated_mb
    stopped: str  # why the sweep stopped, in words

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


def batch_sweep(forward: Callable[[Any], Any], make_inputs: Callable[[int], Any], *, start: int = 1,
                max_batch: int = 1 << 24, memory_fraction: float = 0.85, budget_s: float = 0.3,
                max_call_s: float = 1.0) -> BatchSweep:
    """Time `forward(make_inputs(b))` for b = start, 2*start, ... with the inputs already on the
    device. Stops at `max_batch`, at an out-of-memory error, when a call takes over `max_call_s`, or
    when the next doubling would need more than `memory_fraction` of the device's memory, judged
    from this batch's peak (inputs and activations grow with the batch; weights do not)."""
    torch = require_cuda("batch size vs throughput")
    if start < 1 or max_batch < start:
        raise ValueError(f"batch_sweep needs 1 <= start <= max_batch, got start={start}, max_batch={max_batch}")
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    rows: list[dict[str, Any]] = []
    size, stopped = start, f"reached max_batch={max_batch}"
    while size <= max_batch:
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            weights = torch.cuda.memory_allocated()
            inputs = make_inputs(size)
            memory = peak_memory(lambda inputs=inputs: forward(inputs))
            stats = device_latency(lambda inputs=inputs: forward(inputs), budget_s=budget_s, min_samples=5)
        except torch.cuda.OutOfMemoryError:
            stopped = f"out of memory at batch {size}"
            break
        rows.append({"batch_size": size, "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms,
                     "throughput_per_s": size / (stats.p50_ms / 1e3), "peak_allocated_mb": memory.peak_allocated_mb})
        del inputs
        grows = memory.peak_allocated_mb * 2**20 - weights
        if weights + 2 * grows > memory_fraction * total:
            stopped = (f"memory limit: batch {2 * size} would need ~{(weights + 2 * grows) / 2**30:.1f} GiB of "
                       f"{total / 2**30:.1f} GiB (> {memory_fraction:.0%})")
            break
        if stats.p50_ms / 1e3 > max_call_s:
            stopped = f"a call at batch {size} took {stats.p50_ms:.0f} ms (> max_call_s={max_call_s})"
            break
        size *= 2
    torch.cuda.empty_cache()
    return BatchSweep(rows, stopped)


# --- host <-> device copies -----------------------------------------------------------

@dataclass(frozen=True)
class TransferProfile:
    """Per-batch copy and compute times (p50, ms) and the copies' share of end to end."""

    batch_size: int
    input_mb: float
    output_mb: float
    h2d_pageable_ms: float
    h2d_pinned_ms: float
    compute_ms: float  # inputs resident on the device
    d2h_pageable_ms: float
    d2h_pinned_ms: float
    end_to_end_pageable_ms: float  # copy in (pageable), compute, copy out (pageable)
    end_to_end_pinned_ms: float
    transfer_share_pageable: float  # (h2d + d2h) / (h2d + compute + d2h), pageable
    transfer_share_pinned: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def transfer_profile(forward: Callable[[dict], Any], batch: dict[str, Any], *, device: str = "cuda",
                     cast: Callable[[Any], Any] | None = None, budget_s: float = 0.5) -> TransferProfile:
    """Host-to-device copy of a numpy `batch` (pageable vs pinned host memory), `forward` on the
    resident tensors, device-to-host copy of its output (pageable vs pinned), each timed alone,
    and the whole chain end to end. `cast(tensor) -> tensor` converts inputs on the device (e.g.
    to bf16) and counts as compute."""
    torch = require_cuda("transfer profile")
    cast = cast or (lambda tensor: tensor)
    pageable = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    pinned = {k: v.pin_memory() for k, v in pageable.items()}
    resident = {k: cast(v.to(device)) for k, v in pageable.items()}
    output = forward(resident).clone()  # a CUDA-graph forward reuses its output buffer: keep a copy
    out_pageable = torch.empty(output.shape, dtype=output.dtype)
    out_pinned = torch.empty(output.shape, dtype=output.dtype, pin_memory=True)

    def h2d(source, non_blocking):
        return {k: v.to(device, non_blocking=non_blocking) for k, v in source.items()}

    def chain(source, target, non_blocking):
        out = forward({k: cast(v) for k, v in h2d(source, non_blocking).items()})
        target.copy_(out, non_blocking=non_blocking)

    def p50(fn):
        return device_latency(fn, budget_s=budget_s).p50_ms

    times = {
        "h2d_pageable_ms": p50(lambda: h2d(pageable, False)),
        "h2d_pinned_ms": p50(lambda: h2d(pinned, True)),
        "compute_ms": p50(lambda: forward(resident)),
        "d2h_pageable_ms": p50(lambda: out_pageable.copy_(output)),
        "d2h_pinned_ms": p50(lambda: out_pinned.copy_(output, non_blocking=True)),
        "end_to_end_pageable_ms": p50(lambda: chain(pageable, out_pageable, False)),
        "end_to_end_pinned_ms": p50(lambda: chain(pinned, out_pinned, True)),
    }

    def share(h2d_ms, d2h_ms):
        return round((h2d_ms + d2h_ms) / (h2d_ms + times["compute_ms"] + d2h_ms), 4)

    mb = 2.0 ** 20
    rows = int(next(iter(batch.values())).shape[0])
    return TransferProfile(
        batch_size=rows, input_mb=round(sum(v.nbytes for v in pageable.values()) / mb, 3),
        output_mb=round(output.numel() * output.element_size() / mb, 3),
        **{k: round(v, 4) for k, v in times.items()},
        transfer_share_pageable=share(times["h2d_pageable_ms"], times["d2h_pageable_ms"]),
        transfer_share_pinned=share(times["h2d_pinned_ms"], times["d2h_pinned_ms"]))


# --- energy ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Energy:
    """Energy per prediction from NVML's total-energy counter, or why it is not available."""

    available: bool
    reason: str = ""  # why not, when not available
    joules_per_prediction: float | None = None
    predictions: int | None = None
    seconds: float | None = None
    mean_power_w: float | None = None
    idle_power_w: float | None = None  # read before the run, once the readings have settled (at rest)
    above_idle_joules_per_prediction: float | None = None  # (mean - idle power) x time / predictions

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if not self.available:
            return f"energy: not available ({self.reason})"
        return (f"energy: {self.joules_per_prediction * 1e3:.4f} mJ/prediction over {self.predictions} predictions "
                f"in {self.seconds:.1f} s at {self.mean_power_w:.0f} W mean (idle {self.idle_power_w:.0f} W; "
                f"{self.above_idle_joules_per_prediction * 1e3:.4f} mJ/prediction above idle)")


def _nvml_handle(device: str):
    import pynvml

    index = _nvml_index(_device_index(device))
    return pynvml.nvmlDeviceGetHandleByUUID(index) if isinstance(index, str) else \
        pynvml.nvmlDeviceGetHandleByIndex(index)


IDLE_SETTLE_MAX_S = 15.0  # power readings lag and decay after load: wait at most this long for them to settle


def _idle_power(pynvml: Any, handle: Any, window_s: float) -> float:
    """Median power (W) over the first `window_s` window that agrees within 5% with the window
    before it: a GPU that just ran work reads hundreds of watts for seconds afterwards."""
    previous = None
    deadline = time.perf_counter() + IDLE_SETTLE_MAX_S
    while True:
        readings = []
        until = time.perf_counter() + window_s
        while time.perf_counter() < until:
            readings.append(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
            time.sleep(0.05)
        median = float(sorted(readings)[len(readings) // 2])
        if (previous is not None and abs(median - previous) <= 0.05 * previous) or time.perf_counter() > deadline:
            return median
        previous = median


def energy_per_prediction(fn: Callable[[], Any], rows_per_call: int, *, device: str = "cuda",
                          min_seconds: float = ENERGY_MIN_S, idle_s: float = IDLE_SAMPLE_S) -> Energy:
    """Run `fn()` (device work, `rows_per_call` predictions each) back to back for at least
    `min_seconds` and read NVML's total-energy counter before and after; the idle power is
    sampled first, with nothing running. Never raises for a missing GPU or NVML: the result
    says "not available" and why."""
    if min_seconds < ENERGY_MIN_S:
        raise ValueError(f"min_seconds={min_seconds} is too short: NVML's energy counter needs a run of at least "
                         f"{ENERGY_MIN_S:g} s; pass min_seconds >= {ENERGY_MIN_S:g}")
    ok, why = cuda_status()
    if not ok:
        return Energy(False, why)
    try:
        import pynvml
    except ImportError:
        return Energy(False, "nvidia-ml-py (pynvml) is not installed: pip install nvidia-ml-py")
    import torch

    try:
        pynvml.nvmlInit()
    except Exception as error:  # noqa: BLE001 - NVML missing from the driver install
        return Energy(False, f"NVML did not start: {error}")
    try:
        handle = _nvml_handle(device)
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception as error:  # noqa: BLE001 - NVMLError_NotSupported (pre-Volta GPUs)
            return Energy(False, f"this GPU has no total-energy counter ({error})")
        torch.cuda.synchronize()
        idle = _idle_power(pynvml, handle, idle_s)
        fn()  # one call so that lazy work (allocation, compilation) stays out of the energy
        torch.cuda.synchronize()
        calls = 0
        start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        start = time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            fn()
            calls += 1
            if calls % 8 == 0:  # keep the queue short so the clock reflects finished work
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        joules = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - start_mj) / 1000.0
    finally:
        pynvml.nvmlShutdown()
    predictions = calls * int(rows_per_call)
    idle_w = idle
    mean_w = joules / seconds
    return Energy(True, "", joules / predictions, predictions, round(seconds, 3), round(mean_w, 1), round(idle_w, 1),
                  max(mean_w - idle_w, 0.0) * seconds / predictions)
