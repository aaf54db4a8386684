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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.utils.benchmark as benchmark

from optlab.bench import gpu_sections as sections
from optlab.bench.gpu_sections import BATCH, BF16_COMPILE, FP32, rows_of, time_host
from optlab.bench.render import Col, Layout, Renderer, target
from optlab.data.datasets import load
from optlab.instruments.environment import environment, package_version
from optlab.instruments.gpu import cuda_status, device_latency, peak_memory
from optlab.instruments.latency import Workload, measure
from optlab.models import zoo
from optlab.models.candidate import Candidate
from optlab.recipes.recipe import OnDevice, UnsupportedRecipe
from optlab.study.study import RunOptions, Study
from optlab.techniques.registry import apply

GEMM_N = 8192
COMMAND = "python -m optlab.bench gpu"
SECTIONS = "gemm,bids,digits,dispatch,compile,transfers,sweep,energy,sparsity,onnxruntime"


def _env_line(env) -> str:
    return (f"{env.gpu_name} | driver {env.gpu_driver} | {env.gpu_memory_mb} MiB | cc {env.gpu_compute_capability} | "
            f"SM clock {env.gpu_sm_clock_mhz}/{env.gpu_sm_clock_max_mhz} MHz | memory clock {env.gpu_memory_clock_mhz} "
            f"MHz | {env.gpu_temperature_c} C | {env.gpu_power_w}/{env.gpu_power_limit_w} W")


def show_machine(out: Renderer, report: dict) -> None:
    env = environment("cuda")
    report["environment_idle"] = env.to_dict()
    out.say(f"GPU (as found): {_env_line(env)}")
    out.say(f"CPU: {env.cpu_model} | {env.cores} cores ({env.logical_cores} logical) | flags: {env.cpu_flags}")
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "torchao": package_version("torchao"),
                "onnxruntime": package_version("onnxruntime"), "nvidia-ml-py": package_version("nvidia-ml-py"),
                "python": env.python_version}
    report["versions"] = versions
    out.say("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))


def measure_gemm() -> dict[str, Any]:
    """The cold harness check: optlab first, then torch.utils.benchmark, same tensors."""
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
    return {"n": n, "dtype": "bf16", "optlab_p50_ms": m.latency.p50_ms, "optlab_tflops": ours,
            "optlab_warmup_calls": m.warmup, "benchmark_median_ms": median_s * 1e3,
            "benchmark_tflops": theirs, "ratio": ours / theirs}


def show_gemm(out: Renderer, g: dict[str, Any], report: dict) -> None:
    ok = abs(g["ratio"] - 1) < 0.10
    out.say(f"\n[harness] {g['n']}^3 bf16 GEMM, optlab.measure first (cold), then torch.utils.benchmark:")
    out.targets([target("optlab GEMM p50 / torch.utils.benchmark median", g["ratio"], ok, COMMAND,
                        f"   optlab p50 {g['optlab_p50_ms']:.3f} ms = {g['optlab_tflops']:.0f} TFLOP/s after "
                        f"{g['optlab_warmup_calls']} warm-up calls; torch.utils.benchmark median "
                        f"{g['benchmark_median_ms']:.3f} ms = {g['benchmark_tflops']:.0f} TFLOP/s; ratio "
                        f"{g['ratio']:.3f} (target within 10%: {'met' if ok else 'MISSED'})")])
    loaded = environment("cuda")
    report["environment_loaded"] = loaded.to_dict()
    out.say(f"GPU (after the GEMM): {_env_line(loaded)}")


def _recipes(name: str, smoke: bool) -> list[Any]:
    if name != "bids":
        return [OnDevice(), OnDevice(precision="bf16"), OnDevice(graphs="manual"),
                OnDevice(precision="bf16", graphs="compile")]
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


def _agreement(out: np.ndarray, ref: np.ndarray) -> float:
    if out.ndim == 1:
        return float(np.mean((out > 0) == (ref > 0)))
    return float(np.mean(out.argmax(axis=1) == ref.argmax(axis=1)))


def _timed_row(candidate, big, one, reference, budget_s: float) -> tuple[dict[str, Any], np.ndarray]:
    """Throughput and p50 of one built candidate, resident and from host memory, with its outputs."""
    to_device, forward = candidate.meta["device_inputs"], candidate.meta["device_forward"]
    resident, resident_one = to_device(big), to_device(one)
    out = candidate.predict(big)
    reference = out if reference is None else reference
    res_p50 = device_latency(lambda f=forward, r=resident: f(r), budget_s=budget_s).p50_ms
    res_one = device_latency(lambda f=forward, r=resident_one: f(r), budget_s=budget_s).p50_ms
    host_p50, host_one = time_host(candidate, big, budget_s), time_host(candidate, one, budget_s)
    memory = peak_memory(lambda f=forward, r=resident: f(r))
    return {"resident_per_s": BATCH / (res_p50 / 1e3), "host_per_s": BATCH / (host_p50 / 1e3),
            "resident_p50_ms": res_p50, "host_p50_ms": host_p50, "batch1_resident_p50_ms": res_one,
            "batch1_host_p50_ms": host_one, "peak_allocated_mb": memory.peak_allocated_mb,
            "peak_over_resident_mb": memory.peak_over_resident_mb, "agreement": _agreement(out, reference),
            "max_abs_diff": float(np.max(np.abs(out - reference))),
            **{k: v for k, v in candidate.meta.items() if k in ("sparse_layers", "dense_layers", "quantized_layers",
                                                                "unquantized_layers", "first_call_s")}}, reference


def candidate_rows(name: str, model, data, smoke: bool, budget_s: float, built: dict):
    """One row per GPU candidate as it finishes (skipped and failed candidates are rows too); the built
    candidates land in `built` for the later sections."""
    big, one = rows_of(data, BATCH, 1), rows_of(data, 1, 2)
    reference = None
    for recipe in _recipes(name, smoke):
        start = time.perf_counter()
        try:
            candidate = apply(recipe, model, data)
        except UnsupportedRecipe as error:
            yield {"candidate": recipe.name, "skipped": str(error)}
            continue
        except Exception as error:  # noqa: BLE001 - one candidate failing is a row, not the end of the bench
            yield {"candidate": recipe.name, "error": f"{type(error).__name__}: {error}"[:300]}
            continue
        build_s = time.perf_counter() - start
        try:
            row, reference = _timed_row(candidate, big, one, reference, budget_s)
        except Exception as error:  # noqa: BLE001
            yield {"candidate": recipe.name, "error": f"{type(error).__name__}: {error}"[:300], "while": "timing"}
            continue
        built[recipe.name] = candidate
        yield {"candidate": recipe.name, **row, "build_s": build_s}


def _status_cell(row) -> str | None:
    if isinstance(row.get("skipped"), str):
        return f"skipped: {row['skipped']}"
    if isinstance(row.get("error"), str):
        while_ = " while timing" if row.get("while") == "timing" else ""
        return f"ERROR{while_} {row['error'][:200]}"
    return None


def _cell(name: str, spec: str):
    return lambda row: "" if _status_cell(row) else format(row[name], spec)


CANDIDATES = Layout((
    Col("candidate", "candidate", 58, "<"),
    Col("resident_per_s", "resident/s", 12, before=" ",
        text=lambda r: _status_cell(r) or f"{r['resident_per_s']:,.0f}"),
    Col("host_per_s", "host/s", 12, before=" ", text=_cell("host_per_s", ",.0f")),
    Col("batch1_resident_p50_ms", "b1 res ms", 9, before=" ", text=_cell("batch1_resident_p50_ms", ".4f")),
    Col("batch1_host_p50_ms", "b1 host ms", 10, before=" ", text=_cell("batch1_host_p50_ms", ".4f")),
    Col("peak_allocated_mb", "peak MiB", 9, before=" ", text=_cell("peak_allocated_mb", ".1f")),
    Col("agreement", "agree", 6, before=" ", text=_cell("agreement", ".4f")),
    Col("build_s", "build s", 7, before=" ", text=_cell("build_s", ".1f"))), indent="   ")


def show_candidates(out: Renderer, name: str, rows, report: dict) -> pd.DataFrame:
    out.say(f"\n[{name}] batch {BATCH}: throughput with inputs resident on the GPU / from host memory; "
            f"batch 1 p50; peak memory; agreement with fp32 eager")
    frame = out.table(f"{name}_candidates", CANDIDATES, rows)
    report[f"{name}_candidates"] = {r.pop("candidate"): {k: v for k, v in r.items() if not _absent(v)}
                                    for r in frame.to_dict(orient="records")}
    return frame


def _absent(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def gpu_targets(rows: dict[str, dict]) -> list[dict]:
    """The bids targets: bf16 + torch.compile throughput and CUDA graphs' batch-1 p50 vs fp32 eager."""
    def get(name, key):
        return rows.get(name, {}).get(key)

    out = []
    if get(FP32, "resident_per_s") and get(BF16_COMPILE, "resident_per_s"):
        resident = get(BF16_COMPILE, "resident_per_s") / get(FP32, "resident_per_s")
        host = get(BF16_COMPILE, "host_per_s") / get(FP32, "host_per_s")
        out.append(target("bf16_compile_vs_fp32_eager_resident", resident, resident >= 3, COMMAND,
                          f"   bf16 + torch.compile vs fp32 eager throughput at batch {BATCH}: {resident:.2f}x with "
                          f"inputs resident (target >= 3x: {'met' if resident >= 3 else 'MISSED'}); {host:.2f}x from "
                          f"host memory") | {"host": host})
    for name in ("ondevice(device=cuda, precision=fp32, graphs=manual)",
                 "ondevice(device=cuda, precision=bf16, graphs=compile-cudagraphs)"):
        if get(FP32, "batch1_resident_p50_ms") and get(name, "batch1_resident_p50_ms"):
            resident = get(FP32, "batch1_resident_p50_ms") / get(name, "batch1_resident_p50_ms")
            host = get(FP32, "batch1_host_p50_ms") / get(name, "batch1_host_p50_ms")
            out.append(target(f"batch1_{name}_vs_fp32_eager_resident", resident, resident >= 3, COMMAND,
                              f"   batch-1 p50, {name} vs fp32 eager: {resident:.2f}x lower resident "
                              f"(target >= 3x: {'met' if resident >= 3 else 'MISSED'}); {host:.2f}x lower from host "
                              f"memory") | {"host": host})
    return out


def show_targets(out: Renderer, rows: dict[str, dict], report: dict) -> None:
    out.say("\n[targets] bids model")
    found = gpu_targets(rows)
    out.targets([{k: v for k, v in t.items() if k != "host"} for t in found])
    report["targets"] = {}
    for t in found:
        report["targets"][t["target"]] = t["figure"]
        report["targets"][t["target"].replace("_resident", "_host")] = t["host"]


STUDY_RECIPES = ({}, {"precision": "tf32"}, {"precision": "bf16"}, {"precision": "fp16"}, {"graphs": "manual"},
                 {"precision": "bf16", "graphs": "manual"}, {"precision": "bf16", "graphs": "compile"},
                 {"precision": "bf16", "graphs": "compile-cudagraphs"}, {"precision": "bf16", "quantize": "float8"})


def study(name: str, full: bool, out_dir: Path | None) -> tuple[Path, pd.DataFrame]:
    """The study of `name`'s GPU candidates against the eager fp32 model on this machine's CPU, saved as
    a results folder that notebooks load with `Study.load_reference(..., label="H200")`."""

    model, data = _reference(name, full)
    folder = (out_dir / "study" / name) if out_dir else Path(tempfile.mkdtemp()) / name
    workload = Workload(throughput_batch_sizes=(1, 256, BATCH), budget_s=1.0, sweep_budget_s=0.5, memory=False,
                        cold_start=False)
    runner = Study(model, data, [OnDevice(**fields) for fields in STUDY_RECIPES], workload=workload,
                   results_dir=folder, options=RunOptions(progress=False))
    return folder, runner.run()


def show_study(out: Renderer, name: str, full: bool, folder: Path, results: pd.DataFrame, report: dict) -> None:
    columns = ["candidate", "status", "p50_ms", "p99_ms", "throughput_per_s", "quality", "quality_drop", "error"]
    out.say(f"\n[study] {name} ({'full' if full else 'smoke'} data): GPU candidates vs eager fp32 on the CPU -> "
            f"{folder}")
    out.frame(f"study_{name}", results[[c for c in columns if c in results.columns]], max_colwidth=60)
    report[f"study_{name}"] = {"folder": str(folder), "rows": int(len(results)),
                               "ok": int((results["status"] == "ok").sum())}


def _reference(name: str, full: bool):
    data = load(name, smoke=not full)
    return zoo.get(name, smoke=not full, data=data), data


def _bids_sections(out: Renderer, args, chosen: set[str], budget: float, report: dict) -> None:
    """Every section that works on the bids model: its candidates and targets, then what they feed."""
    model, data = _reference("bids", args.full_data)
    built: dict[str, Any] = {}
    if chosen & {"bids", "dispatch", "transfers", "sweep", "energy", "onnxruntime"}:
        show_candidates(out, "bids", candidate_rows("bids", model, data, args.smoke, budget, built), report)
        show_targets(out, report["bids_candidates"], report)
        if "dispatch" in chosen:
            report["dispatch"] = sections.measure_dispatch(built, data)
            sections.show_dispatch(out, report["dispatch"])
    if "compile" in chosen:
        report["compile_options"] = sections.measure_compile_options(model, data)
        sections.show_compile_options(out, report["compile_options"])
    if not built:
        return
    if "transfers" in chosen:
        report["transfers"] = sections.measure_transfers(built, data)
        sections.show_transfers(out, report["transfers"])
    if "sweep" in chosen and (sweep := sections.measure_sweep(built, data, args.smoke)) is not None:
        report["batch_sweep"] = sweep
        sections.show_sweep(out, sweep)
    if "energy" in chosen:
        energy = sections.measure_energy(built, data)
        report["energy"] = {name: e.to_dict() for name, e in energy.items()}
        sections.show_energy(out, energy)
    if "onnxruntime" in chosen:
        report["onnxruntime_cuda"] = sections.measure_onnxruntime_cuda(model, data)
        sections.show_onnxruntime_cuda(out, report["onnxruntime_cuda"])


def _other_sections(out: Renderer, args, chosen: set[str], budget: float, report: dict) -> None:
    if "digits" in chosen:
        model, data = _reference("digits", args.full_data)
        show_candidates(out, "digits", candidate_rows("digits", model, data, args.smoke, budget, {}), report)
    if "sparsity" in chosen:
        report["sparsity"] = sections.measure_sparsity(args.smoke, budget)
        sections.show_sparsity(out, report["sparsity"])
    for name in ("bids", "digits"):
        if f"study-{name}" in chosen:
            show_study(out, name, args.full_data, *study(name, args.full_data, args.out), report)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND)
    parser.add_argument("--smoke", action="store_true", help="fewer candidates, shorter loops")
    parser.add_argument("--full-data", action="store_true", help="train the reference models on the full datasets")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_bench.json")
    parser.add_argument("--sections", default=SECTIONS)
    parser.add_argument("--json", default=None, help="write the renderer's tables and targets to this file")
    args = parser.parse_args(argv)
    out = Renderer("gpu", " ".join([COMMAND, *argv]))
    ok, why = cuda_status()
    if not ok:
        out.say(f"gpu bench: not available here ({why}); run it on a machine with a CUDA GPU")
        out.write_json(args.json)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    chosen = set(args.sections.split(","))
    budget = 0.3 if args.smoke else 1.0
    begun = time.monotonic()
    report: dict[str, Any] = {"command": " ".join([COMMAND, *argv])}
    show_machine(out, report)
    if "gemm" in chosen:
        report["gemm"] = measure_gemm()
        show_gemm(out, report["gemm"], report)
    if chosen & {"bids", "dispatch", "compile", "transfers", "sweep", "energy", "onnxruntime"}:
        _bids_sections(out, args, chosen, budget, report)
    _other_sections(out, args, chosen, budget, report)
    report["environment_end"] = environment("cuda").to_dict()
    report["seconds"] = round(time.monotonic() - begun, 1)
    out.say(f"\nGPU (at the end): {_env_line(environment('cuda'))}")
    out.say(f"done in {report['seconds']:.0f} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_bench.json").write_text(json.dumps(report, indent=1, default=str))
        out.say(f"wrote {args.out / 'gpu_bench.json'}")
    out.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
