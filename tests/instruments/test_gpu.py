"""GPU instruments: a clear "not available" without a GPU; on a GPU, the harness against a kernel
of known cost (a large bf16 GEMM, measured cold, within 10% of torch.utils.benchmark), peak memory
of a known allocation, the batch sweep, the copy profile and NVML energy."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from optlab.instruments.gpu import (
    ENERGY_MIN_S,
    GpuUnavailable,
    batch_sweep,
    cuda_status,
    energy_per_prediction,
    peak_memory,
    transfer_profile,
)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
cpu_only = pytest.mark.skipif(CUDA, reason="checks the CPU-only answers")


@cpu_only
def test_without_a_gpu_every_instrument_says_not_available_and_why():
    ok, why = cuda_status()
    assert not ok and why.startswith("needs CUDA: torch ") and "sees no CUDA device" in why
    for call in (lambda: peak_memory(lambda: None), lambda: batch_sweep(lambda x: x, lambda b: b),
                 lambda: transfer_profile(lambda x: x, {"x": np.zeros((2, 2), np.float32)})):
        with pytest.raises(GpuUnavailable, match=r": not available \(needs CUDA: torch "):
            call()
    energy = energy_per_prediction(lambda: None, 1)
    assert not energy.available and energy.joules_per_prediction is None
    assert energy.line().startswith("energy: not available (needs CUDA")


def test_energy_refuses_a_run_too_short_for_the_counter():
    with pytest.raises(ValueError, match="at least 5 s"):
        energy_per_prediction(lambda: None, 1, min_seconds=1.0)


def test_importing_the_gpu_instruments_imports_no_torch_or_nvml():
    code = "import sys, optlab.instruments.gpu, optlab.techniques.gpu; print('pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    code = "import sys, optlab.instruments.gpu; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- on a GPU ----------------------------------------------------------------------------

@pytest.mark.gpu
@needs_cuda
def test_harness_matches_torch_benchmark_on_a_large_bf16_gemm_from_a_cold_start():
    """optlab.measure first (the GPU as the test found it, clocks possibly idle), then
    torch.utils.benchmark: TFLOP/s within 10%."""
    import torch.utils.benchmark as benchmark

    from optlab.instruments.latency import Workload, measure
    from optlab.models.candidate import Candidate

    n = 8192
    generator = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=generator)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=generator)
    out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)

    def predict(batch):
        torch.mm(a, b, out=out)
        return np.zeros((len(batch["x"]), 1), np.float32)

    workload = Workload(batch_size=1, throughput_batch_sizes=(), memory=False, cold_start=False, budget_s=1.0)
    m = measure(Candidate("gemm", predict, device="cuda"), {"x": np.zeros((1, 1), np.float32)}, workload)
    flops = 2 * n**3
    ours = flops / (m.latency.p50_ms / 1e3) / 1e12
    timer = benchmark.Timer("torch.mm(a, b, out=out)", globals={"torch": torch, "a": a, "b": b, "out": out})
    theirs = flops / timer.blocked_autorange(min_run_time=1.0).median / 1e12
    assert abs(ours / theirs - 1) < 0.10, f"optlab {ours:.0f} TFLOP/s vs torch.utils.benchmark {theirs:.0f}"
    assert m.env.gpu_name and m.warmup > 1


@pytest.mark.gpu
@needs_cuda
def test_peak_memory_sees_a_known_allocation():
    resident = torch.ones(1 << 20, device="cuda")  # 4 MiB already there
    memory = peak_memory(lambda: torch.empty(64 << 20, dtype=torch.uint8, device="cuda").fill_(1))
    assert memory.resident_mb >= 4 and 64 <= memory.peak_over_resident_mb < 66
    assert memory.peak_allocated_mb >= memory.resident_mb + 64 and memory.peak_reserved_mb >= memory.peak_allocated_mb
    del resident


@pytest.mark.gpu
@needs_cuda
def test_batch_sweep_doubles_to_its_cap_or_the_memory_limit():
    layer = torch.nn.Linear(256, 256).cuda()

    def forward(x):
        with torch.inference_mode():
            return layer(x)

    sweep = batch_sweep(forward, lambda b: torch.randn(b, 256, device="cuda"), start=4, max_batch=64, budget_s=0.05)
    assert [row["batch_size"] for row in sweep.rows] == [4, 8, 16, 32, 64] and sweep.stopped == "reached max_batch=64"
    assert all(row["throughput_per_s"] > 0 and row["peak_allocated_mb"] > 0 for row in sweep.rows)
    limited = batch_sweep(forward, lambda b: torch.randn(b, 256, device="cuda"), start=1 << 16, max_batch=1 << 40,
                          budget_s=0.05, memory_fraction=0.001)  # a tiny "memory limit" stops it at once
    assert len(limited.rows) == 1 and limited.stopped.startswith("memory limit: batch 131072 would need")


@pytest.mark.gpu
@needs_cuda
def test_transfer_profile_times_each_copy_and_its_share():
    layer = torch.nn.Linear(64, 8).cuda()

    def forward(tensors):
        with torch.inference_mode():
            return layer(tensors["x"])

    profile = transfer_profile(forward, {"x": np.random.default_rng(0).normal(size=(4096, 64)).astype(np.float32)},
                               budget_s=0.1)
    assert profile.batch_size == 4096 and profile.input_mb == 1.0 and profile.output_mb == 0.125
    times = [v for k, v in profile.to_dict().items() if k.endswith("_ms")]
    assert all(t > 0 for t in times)
    assert 0 < profile.transfer_share_pageable < 1 and 0 < profile.transfer_share_pinned < 1


@pytest.mark.gpu
@needs_cuda
def test_energy_per_prediction_from_the_nvml_counter():
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed here")
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    energy = energy_per_prediction(lambda: a @ a, rows_per_call=4096)
    assert energy.available, energy.reason
    assert energy.seconds >= ENERGY_MIN_S and energy.predictions % 4096 == 0 and energy.predictions > 0
    assert energy.joules_per_prediction > 0 and energy.idle_power_w > 0 and energy.mean_power_w > 0
    assert "mJ/prediction" in energy.line()
