"""The GPU bench's sections after the candidate table: where the time goes (dispatch), copies,
batch sweep, compile options, energy, 2:4 sparsity and ONNX Runtime's CUDA provider. Each
`measure_*` returns its figures as data (the bench's JSON report keeps them as they are); each
`show_*` renders them for a reader through the bench renderer."""
from __future__ import annotations

import copy
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from optlab.bench.render import Renderer
from optlab.instruments.gpu import batch_sweep, device_latency, energy_per_prediction, transfer_profile
from optlab.instruments.timing import summarize, time_calls
from optlab.recipes.recipe import Compile, OnDevice, UnsupportedRecipe
from optlab.techniques.registry import apply

BATCH = 4096
FP32 = "ondevice(device=cuda, precision=fp32)"
BF16_COMPILE = "ondevice(device=cuda, precision=bf16, graphs=compile)"


def rows_of(data, n: int, seed: int) -> dict[str, np.ndarray]:
    split = data.test
    rows = np.random.default_rng(seed).integers(0, len(split.labels), n)
    return {k: v[rows] for k, v in split.inputs.items()}


def time_host(candidate, batch, budget_s: float) -> float:
    """p50 ms of candidate.predict(numpy batch): copies in and out included."""
    run = time_calls(candidate.predict, [batch], warmup=3, min_samples=10, budget_s=budget_s,
                     sync=torch.cuda.synchronize)
    return summarize(run.samples_ns).p50_ms


def measure_transfers(candidates: dict, data) -> dict[str, Any]:
    out = {}
    for name in (FP32, BF16_COMPILE):
        candidate = candidates.get(name)
        if candidate is None:
            continue
        cast_dtype = torch.bfloat16 if "bf16" in name else None

        def cast(tensor, dtype=cast_dtype):
            return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

        out[name] = transfer_profile(candidate.meta["device_forward"], rows_of(data, BATCH, 3), cast=cast).to_dict()
    return out


def show_transfers(out: Renderer, transfers: dict[str, Any]) -> None:
    out.say(f"\n[transfers] bids, batch {BATCH}: copy times per batch (p50 ms), pinned vs pageable, share of end "
            "to end")
    for name, p in transfers.items():
        p = SimpleNamespace(**p)
        out.say(f"   {name}: in {p.input_mb:.2f} MB, out {p.output_mb:.3f} MB | H2D {p.h2d_pageable_ms:.3f} pageable "
                f"/ {p.h2d_pinned_ms:.3f} pinned | compute {p.compute_ms:.3f} | D2H {p.d2h_pageable_ms:.3f} / "
                f"{p.d2h_pinned_ms:.3f} | end to end {p.end_to_end_pageable_ms:.3f} / {p.end_to_end_pinned_ms:.3f} "
                f"| copies {p.transfer_share_pageable:.0%} of it pageable, {p.transfer_share_pinned:.0%} pinned")


def measure_sweep(candidates: dict, data, smoke: bool) -> dict[str, Any] | None:
    name = "ondevice(device=cuda, precision=bf16)"
    candidate = candidates.get(name)
    if candidate is None:
        return None
    pool = candidate.meta["device_inputs"](rows_of(data, 1 << 16, 4))

    def make_inputs(size):
        index = torch.randint(0, 1 << 16, (size,), device="cuda")
        return {k: v[index] for k, v in pool.items()}

    sweep = batch_sweep(candidate.meta["device_forward"], make_inputs, start=1,
                        max_batch=(1 << 12) if smoke else 1 << 27, budget_s=0.2)
    return {"candidate": name, "rows": sweep.rows, "stopped": sweep.stopped}


def show_sweep(out: Renderer, sweep: dict[str, Any]) -> None:
    out.say(f"\n[batch sweep] {sweep['candidate']}, inputs resident: rows/s by batch size")
    out.say("   " + " | ".join(f"{r['batch_size']}: {r['throughput_per_s']:,.0f}" for r in sweep["rows"]))
    out.say(f"   peak MiB at the largest: {sweep['rows'][-1]['peak_allocated_mb']:,.0f}; stopped: {sweep['stopped']}")


def _issue_and_kernels(forward, resident, calls: int) -> tuple[float, float, float]:
    """(CPU issue us per call without synchronising, summed GPU kernel us per call, kernels per call)."""
    for _ in range(10):
        forward(resident)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        forward(resident)
    issue_us = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            forward(resident)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    if kernels:
        return issue_us, sum(e.device_time for e in kernels) / calls, len(kernels) / calls
    # this torch attaches kernels to the CPU ops that launched them
    gpu_us = sum(e.self_device_time_total for e in prof.key_averages()) / calls
    return issue_us, gpu_us, sum(len(getattr(e, "kernels", ())) for e in prof.events()) / calls


def measure_dispatch(candidates: dict, data, calls: int = 50) -> dict[str, Any]:
    """Where each candidate's time goes at batch 4096 with inputs resident: the CPU time to issue one
    call (no synchronisation between calls), the GPU kernels it launches and their summed device time
    (torch.profiler). When the CPU's issue time exceeds the GPU's work, the candidate is launch-bound:
    only fewer launches (CUDA graphs) make it faster, not cheaper arithmetic (bf16) or fused kernels."""
    big = rows_of(data, BATCH, 7)
    out = {}
    for name, candidate in candidates.items():
        issue_us, gpu_us, per_call = _issue_and_kernels(candidate.meta["device_forward"],
                                                        candidate.meta["device_inputs"](big), calls)
        out[name] = {"cpu_issue_us": issue_us, "gpu_kernel_us": gpu_us, "kernels_per_call": per_call,
                     "verdict": "launch-bound" if issue_us > gpu_us else "GPU-bound", "calls": calls}
    return out


def show_dispatch(out: Renderer, dispatch: dict[str, Any], calls: int = 50) -> None:
    out.say(f"\n[dispatch] batch {BATCH}, inputs resident, {calls} calls each: CPU issue time vs GPU kernel "
            "time per call")
    for name, d in dispatch.items():
        out.say(f"   {name:<58} CPU issue {d['cpu_issue_us']:8.1f} us  GPU kernels {d['gpu_kernel_us']:8.1f} us  "
                f"{d['kernels_per_call']:5.1f} kernels/call  {d['verdict']}")


def _first_and_p50(fn, tensors) -> tuple[float, float]:
    with torch.inference_mode():
        start = time.perf_counter()
        fn(**tensors)
        first_s = time.perf_counter() - start
        return first_s, device_latency(lambda f=fn, t=tensors: f(**t), budget_s=1.0).p50_ms


def measure_compile_options(model, data, progress=lambda _line: None) -> dict[str, Any]:
    """bf16 + torch.compile against fp32 eager with the same module at two batch sizes (4096: launch-bound
    on a slow host CPU; 262,144: GPU-bound), and with Inductor's C++ wrapper, which launches the
    generated kernels from C++ instead of Python."""
    fp32 = copy.deepcopy(model).eval().cuda()
    bf16 = copy.deepcopy(model).eval().cuda().to(torch.bfloat16)
    variants = {"fp32 eager": (fp32, None), "bf16 eager": (bf16, None),
                "bf16 compile": (bf16, torch.compile(bf16)),
                "bf16 compile cpp_wrapper": (bf16, torch.compile(bf16, options={"cpp_wrapper": True})),
                "bf16 compile reduce-overhead": (bf16, torch.compile(bf16, mode="reduce-overhead"))}
    out = {}
    for batch in (BATCH, 262_144):
        rows = rows_of(data, batch, 8)
        line = {}
        for label, (module, compiled) in variants.items():
            dtype = next(module.parameters()).dtype
            tensors = {k: torch.from_numpy(v).cuda() for k, v in rows.items()}
            tensors = {k: (t.to(dtype) if t.is_floating_point() else t) for k, t in tensors.items()}
            try:
                first_s, p50 = _first_and_p50(compiled or module, tensors)
            except Exception as error:  # noqa: BLE001 - an option this torch lacks is a line, not the end
                line[label] = {"error": f"{type(error).__name__}: {str(error)[:160]}"}
                continue
            line[label] = {"rows_per_s": batch / (p50 / 1e3), "p50_ms": p50, "first_call_s": first_s}
        out[str(batch)] = line
    return out


def show_compile_options(out: Renderer, options: dict[str, Any]) -> None:
    out.say("\n[compile options] bids, inputs resident: rows/s of fp32 eager vs bf16 + torch.compile variants")
    for batch, line in options.items():
        for label, r in line.items():
            if "error" in r:
                out.say(f"   batch {int(batch):>7} {label:<30} ERROR {r['error']}")
                continue
            base = line.get("fp32 eager", {}).get("rows_per_s")
            ratio = f"{r['rows_per_s'] / base:5.2f}x" if base else "  n/a"
            out.say(f"   batch {int(batch):>7} {label:<30} {r['rows_per_s']:>14,.0f} rows/s  p50 {r['p50_ms']:.4f} ms  "
                    f"{ratio} fp32 eager  (first call {r['first_call_s']:.1f} s)")


def measure_energy(candidates: dict, data) -> dict[str, Any]:
    out = {}
    for name in (FP32, BF16_COMPILE):
        candidate = candidates.get(name)
        if candidate is None:
            continue
        resident = candidate.meta["device_inputs"](rows_of(data, BATCH, 5))
        forward = candidate.meta["device_forward"]
        out[name] = energy_per_prediction(lambda f=forward, r=resident: f(r), BATCH)
    return out


def show_energy(out: Renderer, energy: dict[str, Any]) -> None:
    out.say(f"\n[energy] NVML total-energy counter over >= 5 s per candidate, batch {BATCH}, inputs resident")
    for name, e in energy.items():
        out.say(f"   {name}: {e.line()}")


class _MLP:
    """A transformer-sized MLP block (d -> 4d -> d) called with keyword input `x`."""

    @staticmethod
    def build(d: int):
        class Block(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.up, self.down = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

            def forward(self, x):
                return self.down(torch.relu(self.up(x)))

        return Block().eval()


SPARSITY_RECIPES = (OnDevice(precision="bf16"), OnDevice(precision="bf16", sparsity="2:4"),
                    OnDevice(precision="bf16", graphs="compile"),
                    OnDevice(precision="bf16", sparsity="2:4", graphs="compile"))


def measure_sparsity(smoke: bool, budget_s: float) -> dict[str, Any]:
    """2:4 semi-structured sparsity against dense on a transformer-sized MLP, eager and compiled."""
    d, rows = (1024, 2048) if smoke else (4096, 8192)
    torch.manual_seed(0)
    model = _MLP.build(d)
    x = np.random.default_rng(0).normal(size=(rows, d)).astype(np.float32)
    data = SimpleNamespace(calibration=SimpleNamespace(inputs={"x": x[:64]}))
    report: dict[str, Any] = {"d": d, "rows": rows}
    flops = 2 * rows * d * 4 * d * 2
    for recipe in SPARSITY_RECIPES:
        try:
            candidate = apply(recipe, model, data)
        except UnsupportedRecipe as error:
            report[recipe.name] = {"skipped": str(error)}
            continue
        except Exception as error:  # noqa: BLE001
            report[recipe.name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            continue
        resident = candidate.meta["device_inputs"]({"x": x})
        forward = candidate.meta["device_forward"]
        p50 = device_latency(lambda f=forward, r=resident: f(r), budget_s=budget_s).p50_ms
        report[recipe.name] = {"p50_ms": p50, "dense_equivalent_tflops": flops / (p50 / 1e3) / 1e12,
                               "sparse_layers": candidate.meta.get("sparse_layers")}
    dense = report.get("ondevice(device=cuda, precision=bf16)", {}).get("p50_ms")
    sparse = report.get("ondevice(device=cuda, precision=bf16, sparsity=2:4)", {}).get("p50_ms")
    if dense and sparse:
        report["speedup_eager"] = dense / sparse
    return report


def show_sparsity(out: Renderer, report: dict[str, Any]) -> None:
    d, rows = report["d"], report["rows"]
    out.say(f"\n[2:4 sparsity] MLP {d} -> {4 * d} -> {d}, batch {rows}, bf16, inputs resident")
    for recipe in SPARSITY_RECIPES:
        r = report.get(recipe.name, {})
        if "skipped" in r:
            out.say(f"   {recipe.name}: skipped: {r['skipped']}")
        elif "error" in r:
            out.say(f"   {recipe.name}: ERROR {r['error'][:200]}")
        else:
            layers = r.get("sparse_layers")
            out.say(f"   {recipe.name}: p50 {r['p50_ms']:.3f} ms ({r['dense_equivalent_tflops']:.0f} dense-equivalent "
                    f"TFLOP/s){'; sparse layers: ' + ', '.join(layers) if layers else ''}")
    if "speedup_eager" in report:
        out.say(f"   2:4 vs dense (eager): {report['speedup_eager']:.2f}x")


def measure_onnxruntime_cuda(model, data) -> dict[str, Any]:
    try:
        with tempfile.TemporaryDirectory() as workdir:
            candidate = apply(Compile(provider="cuda"), model, data, workdir=workdir)
            p50 = time_host(candidate, rows_of(data, BATCH, 6), 0.5)
        return {"host_per_s": BATCH / (p50 / 1e3)}
    except UnsupportedRecipe as error:
        return {"skipped": str(error)}


def show_onnxruntime_cuda(out: Renderer, report: dict[str, Any]) -> None:
    out.say("\n[onnxruntime] CUDA provider")
    if "skipped" in report:
        out.say(f"   skipped: {report['skipped']}")
    else:
        out.say(f"   measured: {report['host_per_s']:,.0f} rows/s at batch {BATCH} from host memory")
