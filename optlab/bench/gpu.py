"""`python -m optlab.bench gpu [--smoke] [--full-data] [--out DIR]`: the GPU path's figures.

On a CUDA machine it prints, in one process run:
- the machine: GPU model, driver, clocks and temperature (idle, then under load), the CPU;
- the harness against a kernel of known cost: an 8192^3 bf16 GEMM timed by `optlab.measure`
  first, from the GPU as found (clocks possibly idle), then by `torch.utils.benchmark`, in TFLOP/s;
- every GPU candidate of the bids model (and a few of digits): throughput at batch 4096 with the
  inputs resident on the GPU and with them coming from host memory, batch-1 p50 both ways, peak
  memory, and agreement with fp32 eager; the targets as ratios;
- where each candidate's time goes (CPU issue time vs GPU kernel time per call: launch-bound or not);
- host<->device copies per batch (pinned vs pageable) and their share of end to end;
- batch size vs throughput up to the memory limit; energy per prediction (NVML) with idle power;
- 2:4 semi-structured sparsity against dense on a transformer-sized MLP;
- why ONNX Runtime's CUDA provider was or was not measured;
- with `--sections study-bids,study-digits`: a study of the GPU candidates saved under `--out`/study/<name>,
  the reference rows notebooks load ("recorded on an H200").
`--out DIR` writes the figures as JSON and CSV. Without CUDA it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

BATCH = 4096
GEMM_N = 8192


def _env_line(env) -> str:
    return (f"{env.gpu_name} | driver {env.gpu_driver} | {env.gpu_memory_mb} MiB | cc {env.gpu_compute_capability} | "
            f"SM clock {env.gpu_sm_clock_mhz}/{env.gpu_sm_clock_max_mhz} MHz | memory clock {env.gpu_memory_clock_mhz} "
            f"MHz | {env.gpu_temperature_c} C | {env.gpu_power_w}/{env.gpu_power_limit_w} W")


def _machine(report: dict) -> None:
    from optlab.instruments.environment import environment, package_version

    env = environment("cuda")
    report["environment_idle"] = env.to_dict()
    print(f"GPU (as found): {_env_line(env)}")
    print(f"CPU: {env.cpu_model} | {env.cores} cores ({env.logical_cores} logical) | flags: {env.cpu_flags}")
    import torch

    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "torchao": package_version("torchao"),
                "onnxruntime": package_version("onnxruntime"), "nvidia-ml-py": package_version("nvidia-ml-py"),
                "python": env.python_version}
    report["versions"] = versions
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))


def _gemm(report: dict) -> None:
    """The cold harness check: optlab first, then torch.utils.benchmark, same tensors."""
    import torch
    import torch.utils.benchmark as benchmark

    from optlab.instruments.latency import Workload, measure
    from optlab.models.candidate import Candidate

    n = GEMM_N
    generator = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=generator)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=generator)
    out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()

    def predict(batch):
        torch.mm(a, b, out=out)
        return np.zeros((1, 1), np.float32)

    workload = Workload(batch_size=1, throughput_batch_sizes=(), memory=False, cold_start=False, budget_s=1.0)
    m = measure(Candidate("gemm", predict, device="cuda"), {"x": np.zeros((1, 1), np.float32)}, workload)
    flops = 2 * n**3
    ours = flops / (m.latency.p50_ms / 1e3) / 1e12
    timer = benchmark.Timer("torch.mm(a, b, out=out)", globals={"torch": torch, "a": a, "b": b, "out": out})
    median_s = timer.blocked_autorange(min_run_time=2.0).median
    theirs = flops / median_s / 1e12
    report["gemm"] = {"n": n, "dtype": "bf16", "optlab_p50_ms": m.latency.p50_ms, "optlab_tflops": ours,
                      "optlab_warmup_calls": m.warmup, "benchmark_median_ms": median_s * 1e3,
                      "benchmark_tflops": theirs, "ratio": ours / theirs}
    print(f"\n[harness] {n}^3 bf16 GEMM, optlab.measure first (cold), then torch.utils.benchmark:")
    print(f"   optlab p50 {m.latency.p50_ms:.3f} ms = {ours:.0f} TFLOP/s after {m.warmup} warm-up calls; "
          f"torch.utils.benchmark median {median_s * 1e3:.3f} ms = {theirs:.0f} TFLOP/s; ratio {ours / theirs:.3f} "
          f"(target within 10%: {'met' if abs(ours / theirs - 1) < 0.10 else 'MISSED'})")
    from optlab.instruments.environment import environment

    loaded = environment("cuda")
    report["environment_loaded"] = loaded.to_dict()
    print(f"GPU (after the GEMM): {_env_line(loaded)}")


def _recipes(smoke: bool) -> list[Any]:
    from optlab.recipes.recipe import OnDevice

    chosen = [OnDevice(), OnDevice(precision="tf32"), OnDevice(precision="bf16"),
              OnDevice(precision="bf16", autocast=True), OnDevice(precision="fp16"),
              OnDevice(precision="fp16", autocast=True), OnDevice(graphs="manual"),
              OnDevice(precision="bf16", graphs="manual"), OnDevice(precision="bf16", graphs="compile"),
              OnDevice(precision="bf16", graphs="compile-cudagraphs")]
    if not smoke:
        chosen += [OnDevice(graphs="compile"), OnDevice(precision="bf16", quantize="int8"),
                   OnDevice(precision="bf16", quantize="float8"),
                   OnDevice(precision="bf16", quantize="float8", graphs="compile"),
                   OnDevice(precision="bf16", sparsity="2:4")]
    return chosen


def _rows_of(data, n: int, seed: int) -> dict[str, np.ndarray]:
    split = data.test
    rows = np.random.default_rng(seed).integers(0, len(split.labels), n)
    return {k: v[rows] for k, v in split.inputs.items()}


def _agreement(out: np.ndarray, ref: np.ndarray) -> float:
    if out.ndim == 1:
        return float(np.mean((out > 0) == (ref > 0)))
    return float(np.mean(out.argmax(axis=1) == ref.argmax(axis=1)))


def _time_host(candidate, batch, budget_s: float) -> float:
    """p50 ms of candidate.predict(numpy batch): copies in and out included."""
    import torch

    from optlab.instruments.timing import summarize, time_calls

    run = time_calls(candidate.predict, [batch], warmup=3, min_samples=10, budget_s=budget_s,
                     sync=torch.cuda.synchronize)
    return summarize(run.samples_ns).p50_ms


def _candidates(name: str, model, data, smoke: bool, budget_s: float, report: dict) -> dict[str, dict]:
    from optlab.instruments.gpu import device_latency, peak_memory
    from optlab.recipes.recipe import OnDevice, UnsupportedRecipe
    from optlab.techniques.registry import apply

    big, one = _rows_of(data, BATCH, 1), _rows_of(data, 1, 2)
    recipes = _recipes(smoke) if name == "bids" else [
        OnDevice(), OnDevice(precision="bf16"), OnDevice(graphs="manual"), OnDevice(precision="bf16", graphs="compile")]
    rows: dict[str, dict] = {}
    reference = None
    print(f"\n[{name}] batch {BATCH}: throughput with inputs resident on the GPU / from host memory; "
          f"batch 1 p50; peak memory; agreement with fp32 eager")
    print(f"   {'candidate':<58} {'resident/s':>12} {'host/s':>12} {'b1 res ms':>9} {'b1 host ms':>10} "
          f"{'peak MiB':>9} {'agree':>6} {'build s':>7}")
    for recipe in recipes:
        start = time.perf_counter()
        try:
            candidate = apply(recipe, model, data)
        except UnsupportedRecipe as error:
            rows[recipe.name] = {"skipped": str(error)}
            print(f"   {recipe.name:<58} skipped: {error}")
            continue
        except Exception as error:  # noqa: BLE001 - one candidate failing is a row, not the end of the bench
            rows[recipe.name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            print(f"   {recipe.name:<58} ERROR {type(error).__name__}: {str(error)[:200]}")
            continue
        build_s = time.perf_counter() - start
        try:
            to_device, forward = candidate.meta["device_inputs"], candidate.meta["device_forward"]
            resident, resident_one = to_device(big), to_device(one)
            out = candidate.predict(big)
            reference = out if reference is None else reference
            res_p50 = device_latency(lambda f=forward, r=resident: f(r), budget_s=budget_s).p50_ms
            res_one = device_latency(lambda f=forward, r=resident_one: f(r), budget_s=budget_s).p50_ms
            host_p50, host_one = _time_host(candidate, big, budget_s), _time_host(candidate, one, budget_s)
            memory = peak_memory(lambda f=forward, r=resident: f(r))
        except Exception as error:  # noqa: BLE001
            rows[recipe.name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            print(f"   {recipe.name:<58} ERROR while timing {type(error).__name__}: {str(error)[:200]}")
            continue
        row = {"resident_per_s": BATCH / (res_p50 / 1e3), "host_per_s": BATCH / (host_p50 / 1e3),
               "resident_p50_ms": res_p50, "host_p50_ms": host_p50, "batch1_resident_p50_ms": res_one,
               "batch1_host_p50_ms": host_one, "peak_allocated_mb": memory.peak_allocated_mb,
               "peak_over_resident_mb": memory.peak_over_resident_mb, "agreement": _agreement(out, reference),
               "max_abs_diff": float(np.max(np.abs(out - reference))), "build_s": build_s,
               **{k: v for k, v in candidate.meta.items() if k in ("sparse_layers", "dense_layers", "quantized_layers",
                                                                   "unquantized_layers", "first_call_s")}}
        rows[recipe.name] = row
        print(f"   {recipe.name:<58} {row['resident_per_s']:>12,.0f} {row['host_per_s']:>12,.0f} {res_one:>9.4f} "
              f"{host_one:>10.4f} {memory.peak_allocated_mb:>9.1f} {row['agreement']:>6.4f} {build_s:>7.1f}")
        rows[recipe.name]["_candidate"] = candidate
    report[f"{name}_candidates"] = {k: {kk: vv for kk, vv in v.items() if kk != "_candidate"} for k, v in rows.items()}
    return rows


def _targets(rows: dict[str, dict], report: dict) -> None:
    def get(name, key):
        return rows.get(name, {}).get(key)

    fp32, bf16c = "ondevice(device=cuda, precision=fp32)", "ondevice(device=cuda, precision=bf16, graphs=compile)"
    graphs = ["ondevice(device=cuda, precision=fp32, graphs=manual)",
              "ondevice(device=cuda, precision=bf16, graphs=compile-cudagraphs)"]
    print("\n[targets] bids model")
    targets = {}
    if get(fp32, "resident_per_s") and get(bf16c, "resident_per_s"):
        resident = get(bf16c, "resident_per_s") / get(fp32, "resident_per_s")
        host = get(bf16c, "host_per_s") / get(fp32, "host_per_s")
        targets["bf16_compile_vs_fp32_eager_resident"] = resident
        targets["bf16_compile_vs_fp32_eager_host"] = host
        print(f"   bf16 + torch.compile vs fp32 eager throughput at batch {BATCH}: {resident:.2f}x with inputs "
              f"resident (target >= 3x: {'met' if resident >= 3 else 'MISSED'}); {host:.2f}x from host memory")
    for name in graphs:
        if get(fp32, "batch1_resident_p50_ms") and get(name, "batch1_resident_p50_ms"):
            resident = get(fp32, "batch1_resident_p50_ms") / get(name, "batch1_resident_p50_ms")
            host = get(fp32, "batch1_host_p50_ms") / get(name, "batch1_host_p50_ms")
            targets[f"batch1_{name}_vs_fp32_eager_resident"] = resident
            targets[f"batch1_{name}_vs_fp32_eager_host"] = host
            print(f"   batch-1 p50, {name} vs fp32 eager: {resident:.2f}x lower resident "
                  f"(target >= 3x: {'met' if resident >= 3 else 'MISSED'}); {host:.2f}x lower from host memory")
    report["targets"] = targets


def _transfers(rows: dict[str, dict], data, report: dict) -> None:
    import torch

    from optlab.instruments.gpu import transfer_profile

    print(f"\n[transfers] bids, batch {BATCH}: copy times per batch (p50 ms), pinned vs pageable, share of end to end")
    report["transfers"] = {}
    for name in ("ondevice(device=cuda, precision=fp32)", "ondevice(device=cuda, precision=bf16, graphs=compile)"):
        candidate = rows.get(name, {}).get("_candidate")
        if candidate is None:
            continue
        cast_dtype = torch.bfloat16 if "bf16" in name else None

        def cast(tensor, dtype=cast_dtype):
            return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

        profile = transfer_profile(candidate.meta["device_forward"], _rows_of(data, BATCH, 3), cast=cast)
        report["transfers"][name] = profile.to_dict()
        p = profile
        print(f"   {name}: in {p.input_mb:.2f} MB, out {p.output_mb:.3f} MB | H2D {p.h2d_pageable_ms:.3f} pageable / "
              f"{p.h2d_pinned_ms:.3f} pinned | compute {p.compute_ms:.3f} | D2H {p.d2h_pageable_ms:.3f} / "
              f"{p.d2h_pinned_ms:.3f} | end to end {p.end_to_end_pageable_ms:.3f} / {p.end_to_end_pinned_ms:.3f} | "
              f"copies {p.transfer_share_pageable:.0%} of it pageable, {p.transfer_share_pinned:.0%} pinned")


def _sweep(rows: dict[str, dict], data, smoke: bool, report: dict) -> None:
    import torch

    from optlab.instruments.gpu import batch_sweep

    name = "ondevice(device=cuda, precision=bf16)"
    candidate = rows.get(name, {}).get("_candidate")
    if candidate is None:
        return
    pool = candidate.meta["device_inputs"](_rows_of(data, 1 << 16, 4))

    def make_inputs(size):
        index = torch.randint(0, 1 << 16, (size,), device="cuda")
        return {k: v[index] for k, v in pool.items()}

    sweep = batch_sweep(candidate.meta["device_forward"], make_inputs, start=1,
                        max_batch=(1 << 12) if smoke else 1 << 27, budget_s=0.2)
    report["batch_sweep"] = {"candidate": name, "rows": sweep.rows, "stopped": sweep.stopped}
    print(f"\n[batch sweep] {name}, inputs resident: rows/s by batch size")
    print("   " + " | ".join(f"{r['batch_size']}: {r['throughput_per_s']:,.0f}" for r in sweep.rows))
    print(f"   peak MiB at the largest: {sweep.rows[-1]['peak_allocated_mb']:,.0f}; stopped: {sweep.stopped}")


def _dispatch(rows: dict[str, dict], data, report: dict) -> None:
    """Where each candidate's time goes at batch 4096 with inputs resident: the CPU time to issue one
    call (no synchronisation between calls), the GPU kernels it launches and their summed device time
    (torch.profiler). When the CPU's issue time exceeds the GPU's work, the candidate is launch-bound:
    only fewer launches (CUDA graphs) make it faster, not cheaper arithmetic (bf16) or fused kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    calls = 50
    big = _rows_of(data, BATCH, 7)
    print(f"\n[dispatch] batch {BATCH}, inputs resident, {calls} calls each: CPU issue time vs GPU kernel "
          "time per call")
    report["dispatch"] = {}
    for name, row in rows.items():
        candidate = row.get("_candidate")
        if candidate is None:
            continue
        forward, resident = candidate.meta["device_forward"], candidate.meta["device_inputs"](big)
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
            gpu_us, per_call = sum(e.device_time for e in kernels) / calls, len(kernels) / calls
        else:  # this torch attaches kernels to the CPU ops that launched them
            gpu_us = sum(e.self_device_time_total for e in prof.key_averages()) / calls
            per_call = sum(len(getattr(e, "kernels", ())) for e in prof.events()) / calls
        bound = "launch-bound" if issue_us > gpu_us else "GPU-bound"
        report["dispatch"][name] = {"cpu_issue_us": issue_us, "gpu_kernel_us": gpu_us, "kernels_per_call": per_call,
                                    "verdict": bound}
        print(f"   {name:<58} CPU issue {issue_us:8.1f} us  GPU kernels {gpu_us:8.1f} us  "
              f"{per_call:5.1f} kernels/call  {bound}")


def _compile_options(model, data, report: dict) -> None:
    """bf16 + torch.compile against fp32 eager with the same module at two batch sizes (4096: launch-bound
    on a slow host CPU; 262,144: GPU-bound), and with Inductor's C++ wrapper, which launches the
    generated kernels from C++ instead of Python."""
    import copy

    import torch

    from optlab.instruments.gpu import device_latency

    print("\n[compile options] bids, inputs resident: rows/s of fp32 eager vs bf16 + torch.compile variants")
    report["compile_options"] = {}
    fp32 = copy.deepcopy(model).eval().cuda()
    bf16 = copy.deepcopy(model).eval().cuda().to(torch.bfloat16)
    variants = {"fp32 eager": (fp32, None), "bf16 eager": (bf16, None),
                "bf16 compile": (bf16, torch.compile(bf16)),
                "bf16 compile cpp_wrapper": (bf16, torch.compile(bf16, options={"cpp_wrapper": True})),
                "bf16 compile reduce-overhead": (bf16, torch.compile(bf16, mode="reduce-overhead"))}
    for batch in (BATCH, 262_144):
        rows = _rows_of(data, batch, 8)
        line = {}
        for label, (module, compiled) in variants.items():
            tensors = {k: torch.from_numpy(v).cuda() for k, v in rows.items()}
            tensors = {k: (t.to(next(module.parameters()).dtype) if t.is_floating_point() else t)
                       for k, t in tensors.items()}
            fn = compiled or module
            try:
                with torch.inference_mode():
                    start = time.perf_counter()
                    fn(**tensors)
                    first_s = time.perf_counter() - start
                    p50 = device_latency(lambda f=fn, t=tensors: f(**t), budget_s=1.0).p50_ms
            except Exception as error:  # noqa: BLE001 - an option this torch lacks is a line, not the end
                line[label] = {"error": f"{type(error).__name__}: {str(error)[:160]}"}
                print(f"   batch {batch:>7} {label:<30} ERROR {line[label]['error']}")
                continue
            line[label] = {"rows_per_s": batch / (p50 / 1e3), "p50_ms": p50, "first_call_s": first_s}
            ratio = line[label]["rows_per_s"] / line["fp32 eager"]["rows_per_s"]
            print(f"   batch {batch:>7} {label:<30} {line[label]['rows_per_s']:>14,.0f} rows/s  p50 {p50:.4f} ms  "
                  f"{ratio:5.2f}x fp32 eager  (first call {first_s:.1f} s)")
        report["compile_options"][str(batch)] = line


def _energy(rows: dict[str, dict], data, report: dict) -> None:
    from optlab.instruments.gpu import energy_per_prediction

    print(f"\n[energy] NVML total-energy counter over >= 5 s per candidate, batch {BATCH}, inputs resident")
    report["energy"] = {}
    for name in ("ondevice(device=cuda, precision=fp32)", "ondevice(device=cuda, precision=bf16, graphs=compile)"):
        candidate = rows.get(name, {}).get("_candidate")
        if candidate is None:
            continue
        resident = candidate.meta["device_inputs"](_rows_of(data, BATCH, 5))
        forward = candidate.meta["device_forward"]
        energy = energy_per_prediction(lambda f=forward, r=resident: f(r), BATCH)
        report["energy"][name] = energy.to_dict()
        print(f"   {name}: {energy.line()}")


class _MLP:
    """A transformer-sized MLP block (d -> 4d -> d) called with keyword input `x`."""

    @staticmethod
    def build(d: int):
        import torch

        class Block(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.up, self.down = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

            def forward(self, x):
                return self.down(torch.relu(self.up(x)))

        return Block().eval()


def _sparsity(smoke: bool, budget_s: float, report: dict) -> None:
    import torch

    from optlab.instruments.gpu import device_latency
    from optlab.recipes.recipe import OnDevice, UnsupportedRecipe
    from optlab.techniques.registry import apply

    d, rows = (1024, 2048) if smoke else (4096, 8192)
    torch.manual_seed(0)
    model = _MLP.build(d)
    x = np.random.default_rng(0).normal(size=(rows, d)).astype(np.float32)
    data = SimpleNamespace(calibration=SimpleNamespace(inputs={"x": x[:64]}))
    print(f"\n[2:4 sparsity] MLP {d} -> {4 * d} -> {d}, batch {rows}, bf16, inputs resident")
    report["sparsity"] = {"d": d, "rows": rows}
    flops = 2 * rows * d * 4 * d * 2
    for recipe in (OnDevice(precision="bf16"), OnDevice(precision="bf16", sparsity="2:4"),
                   OnDevice(precision="bf16", graphs="compile"), OnDevice(precision="bf16", sparsity="2:4",
                                                                          graphs="compile")):
        try:
            candidate = apply(recipe, model, data)
        except UnsupportedRecipe as error:
            report["sparsity"][recipe.name] = {"skipped": str(error)}
            print(f"   {recipe.name}: skipped: {error}")
            continue
        except Exception as error:  # noqa: BLE001
            report["sparsity"][recipe.name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            print(f"   {recipe.name}: ERROR {type(error).__name__}: {str(error)[:200]}")
            continue
        resident = candidate.meta["device_inputs"]({"x": x})
        forward = candidate.meta["device_forward"]
        p50 = device_latency(lambda f=forward, r=resident: f(r), budget_s=budget_s).p50_ms
        report["sparsity"][recipe.name] = {"p50_ms": p50, "dense_equivalent_tflops": flops / (p50 / 1e3) / 1e12,
                                           "sparse_layers": candidate.meta.get("sparse_layers")}
        layers = candidate.meta.get("sparse_layers")
        print(f"   {recipe.name}: p50 {p50:.3f} ms ({flops / (p50 / 1e3) / 1e12:.0f} dense-equivalent TFLOP/s)"
              f"{'; sparse layers: ' + ', '.join(layers) if layers else ''}")
    dense = report["sparsity"].get("ondevice(device=cuda, precision=bf16)", {}).get("p50_ms")
    sparse = report["sparsity"].get("ondevice(device=cuda, precision=bf16, sparsity=2:4)", {}).get("p50_ms")
    if dense and sparse:
        report["sparsity"]["speedup_eager"] = dense / sparse
        print(f"   2:4 vs dense (eager): {dense / sparse:.2f}x")


def _onnxruntime_cuda(model, data, report: dict) -> None:
    import tempfile

    from optlab.recipes.recipe import Compile, UnsupportedRecipe
    from optlab.techniques.registry import apply

    print("\n[onnxruntime] CUDA provider")
    try:
        with tempfile.TemporaryDirectory() as workdir:
            candidate = apply(Compile(provider="cuda"), model, data, workdir=workdir)
            batch = _rows_of(data, BATCH, 6)
            p50 = _time_host(candidate, batch, 0.5)
        report["onnxruntime_cuda"] = {"host_per_s": BATCH / (p50 / 1e3)}
        print(f"   measured: {BATCH / (p50 / 1e3):,.0f} rows/s at batch {BATCH} from host memory")
    except UnsupportedRecipe as error:
        report["onnxruntime_cuda"] = {"skipped": str(error)}
        print(f"   skipped: {error}")


STUDY_RECIPES = ({}, {"precision": "tf32"}, {"precision": "bf16"}, {"precision": "fp16"}, {"graphs": "manual"},
                 {"precision": "bf16", "graphs": "manual"}, {"precision": "bf16", "graphs": "compile"},
                 {"precision": "bf16", "graphs": "compile-cudagraphs"}, {"precision": "bf16", "quantize": "float8"})


def _study(name: str, full: bool, out: Path | None, report: dict) -> None:
    """The study of `name`'s GPU candidates against the eager fp32 model on this machine's CPU, saved as
    a results folder that notebooks load with `Study.load_reference(..., label="H200")`."""
    import tempfile

    from optlab.instruments.latency import Workload
    from optlab.recipes.recipe import OnDevice
    from optlab.study.study import RunOptions, Study

    model, data = _reference(name, full)
    folder = (out / "study" / name) if out else Path(tempfile.mkdtemp()) / name
    workload = Workload(throughput_batch_sizes=(1, 256, BATCH), budget_s=1.0, sweep_budget_s=0.5, memory=False,
                        cold_start=False)
    study = Study(model, data, [OnDevice(**fields) for fields in STUDY_RECIPES], workload=workload,
                  results_dir=folder, options=RunOptions(progress=False))
    results = study.run()
    columns = ["candidate", "status", "p50_ms", "p99_ms", "throughput_per_s", "quality", "quality_drop", "error"]
    print(f"\n[study] {name} ({'full' if full else 'smoke'} data): GPU candidates vs eager fp32 on the CPU -> {folder}")
    print(results[[c for c in columns if c in results.columns]].to_string(index=False, max_colwidth=60))
    report[f"study_{name}"] = {"folder": str(folder), "rows": int(len(results)),
                               "ok": int((results["status"] == "ok").sum())}


def _reference(name: str, full: bool):
    from optlab.data.datasets import load
    from optlab.models import zoo

    data = load(name, smoke=not full)
    return zoo.get(name, smoke=not full, data=data), data


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlab.bench gpu")
    parser.add_argument("--smoke", action="store_true", help="fewer candidates, shorter loops")
    parser.add_argument("--full-data", action="store_true", help="train the reference models on the full datasets")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_bench.json")
    parser.add_argument("--sections",
                        default="gemm,bids,digits,dispatch,compile,transfers,sweep,energy,sparsity,onnxruntime")
    args = parser.parse_args(argv)
    from optlab.instruments.gpu import cuda_status

    ok, why = cuda_status()
    if not ok:
        print(f"gpu bench: not available here ({why}); run it on a machine with a CUDA GPU")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sections = set(args.sections.split(","))
    budget = 0.3 if args.smoke else 1.0
    begun = time.monotonic()
    report: dict[str, Any] = {"command": "python -m optlab.bench gpu " + " ".join(argv)}
    _machine(report)
    if "gemm" in sections:
        _gemm(report)
    rows: dict[str, dict] = {}
    if sections & {"bids", "dispatch", "compile", "transfers", "sweep", "energy", "onnxruntime"}:
        model, data = _reference("bids", args.full_data)
    if sections & {"bids", "dispatch", "transfers", "sweep", "energy", "onnxruntime"}:
        rows = _candidates("bids", model, data, args.smoke, budget, report)
        _targets(rows, report)
        if "dispatch" in sections:
            _dispatch(rows, data, report)
    if "compile" in sections:
        _compile_options(model, data, report)
    if rows:
        if "transfers" in sections:
            _transfers(rows, data, report)
        if "sweep" in sections:
            _sweep(rows, data, args.smoke, report)
        if "energy" in sections:
            _energy(rows, data, report)
        if "onnxruntime" in sections:
            _onnxruntime_cuda(model, data, report)
    if "digits" in sections:
        model, data = _reference("digits", args.full_data)
        _candidates("digits", model, data, args.smoke, budget, report)
    if "sparsity" in sections:
        _sparsity(args.smoke, budget, report)
    for name in ("bids", "digits"):
        if f"study-{name}" in sections:
            _study(name, args.full_data, args.out, report)
    from optlab.instruments.environment import environment

    report["environment_end"] = environment("cuda").to_dict()
    report["seconds"] = round(time.monotonic() - begun, 1)
    print(f"\nGPU (at the end): {_env_line(environment('cuda'))}")
    print(f"done in {report['seconds']:.0f} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_bench.json").write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.out / 'gpu_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
