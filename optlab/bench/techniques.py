"""`python -m optlab.bench techniques [--smoke] [--profile] [--datasets bids,digits]`

Builds every quantization/compilation candidate for the reference models, measures them
side by side in one run (p50/p99 at batch 1, throughput at batch 256, size) and evaluates
them against the eager fp32 baseline, then checks the speed and quality targets as ratios.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pandas as pd
import torch

from optlab.bench import rows as rows_module
from optlab.bench.render import Renderer, target
from optlab.data.datasets import load
from optlab.instruments.environment import environment
from optlab.instruments.latency import Workload
from optlab.instruments.op_profile import operator_times
from optlab.models import zoo
from optlab.models.runtimes import quiet_torch_logs, torch_predict_fn
from optlab.recipes.recipe import Chain, Compile, Quantize
from optlab.techniques.registry import apply

THREADS = 2


def recipes(smoke: bool) -> list[Any]:
    ort = dict(runtime="onnxruntime")
    chosen = [
        Compile("onnxruntime"), Compile("onnxruntime", graph_level="basic"), Compile("openvino"),
        Quantize("bf16"), Quantize("bf16", autocast=True), Quantize("fp16"), Quantize("dynamic-int8"),
        Quantize("dynamic-int8", **ort), Quantize("dynamic-int8", per_channel=True, **ort),
        Quantize("static-int8", **ort), Quantize("static-int8", calibration="entropy", **ort),
        Quantize("static-int8", calibration="percentile", per_channel=True, **ort),
        Quantize("static-int8", calibration_data="skewed", **ort), Quantize("fp16", **ort),
        Quantize("weight-only-int8", runtime="inc"), Quantize("weight-only-int4", runtime="inc"),
        Quantize("autotune", runtime="inc"),
        Chain(Quantize("static-int8", **ort), Compile("onnxruntime", graph_level="basic")),
    ]
    if not smoke:  # torch.compile costs tens of seconds per model on 2 cores
        chosen += [Quantize("static-int8", runtime="inc"), Compile("torch.compile"),
                   Compile("torch.compile", dynamic=False)]
    return chosen


def reference(name: str, smoke: bool):
    """(model, data): the zoo's reference model for a dataset and the dataset it was trained on."""
    data = load(name, smoke=smoke)
    return zoo.get(name, smoke=smoke, data=data), data


def run_dataset(name: str, smoke: bool, workdir: Path,
                progress: Callable[[str], None] = lambda _line: None) -> list[dict[str, Any]]:
    """One row per candidate of `name`'s reference model (the baseline first); `progress` hears one
    line per finished candidate."""
    model, data = reference(name, smoke=smoke)
    source = "optlab.models.zoo"
    base = zoo.baseline(model, name=f"{name}-baseline")
    if smoke:
        workload = Workload.smoke(throughput_batch_sizes=(256,), threads=THREADS, memory=False, cold_start=False)
    else:
        workload = Workload(batch_size=1, throughput_batch_sizes=(256,), threads=THREADS, budget_s=1.5,
                            sweep_budget_s=1.5, memory=False, cold_start=False, n_boot=200)
    shared = rows_module.context(base, data, workload, data.test.inputs)
    rows = []
    for recipe in [None] + recipes(smoke):
        started = time.perf_counter()
        row = rows_module.bench_row(shared, recipe, workdir / name, dataset=name, model_source=source)
        row["meta"] = {k: v for k, v in row["meta"].items() if k in ("inc_config", "tuning_trials", "compile_s")}
        rows.append(row)
        progress(f"  {name}: {row.get('candidate')} [{row['status']}] {time.perf_counter() - started:.1f}s")
    return rows


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The printed table: one row per candidate, ratios against the dataset's reference row."""
    frame = pd.DataFrame(rows)
    for column in ("p50_ms", "p99_ms", "throughput_b256_per_s", "quality", "quality_drop", "agreement", "logloss",
                   "size_bytes", "build_s"):
        if column not in frame:
            frame[column] = np.nan
    out = pd.DataFrame({"dataset": frame["dataset"], "candidate": frame["candidate"]})
    out["p50_b1_ms"] = frame["p50_ms"].astype(float).round(3)
    out["p99_b1_ms"] = frame["p99_ms"].astype(float).round(3)
    out["thr_b256_per_s"] = frame["throughput_b256_per_s"].astype(float).round(0)
    out["size_kb"] = (frame["size_bytes"].astype(float) / 1024).round(1)
    base = frame[frame["status"] == "reference"].set_index("dataset")
    for column, key in (("size_ratio", "size_bytes"), ("logloss_change_pct", "logloss")):
        ref = frame["dataset"].map(base[key].astype(float))
        value = frame[key].astype(float) / ref
        out[column] = (value * 100 - 100).round(2) if column.endswith("pct") else value.round(3)
    out["metric"] = frame.get("metric")
    out["quality"] = frame["quality"].astype(float).round(4)
    out["drop"] = frame["quality_drop"].astype(float).round(4)
    out["agreement"] = frame["agreement"].astype(float).round(4)
    out["build_s"] = frame["build_s"]
    out["status"] = frame["status"]
    out["error"] = frame.get("error")
    return out


def _ratio(t, dataset: str, a: str, b: str, column: str, inverse: bool = False) -> float | None:
    rows = t[t["dataset"] == dataset].set_index("candidate")
    if a not in rows.index or b not in rows.index:
        return None
    x, y = rows.at[a, column], rows.at[b, column]
    if not (np.isfinite(x) and np.isfinite(y)) or x == 0 or y == 0:
        return None
    return float(y / x) if inverse else float(x / y)


COMMAND = "python -m optlab.bench techniques"


def _check(d: str, label: str, value: float | None, goal: float) -> dict:
    met = None if value is None else value >= goal
    shown = "n/a" if value is None else f"{value:.2f}x"
    verdict = "n/a" if met is None else ("MET" if met else "MISSED")
    return target(f"[{d}] {label}", value, met, COMMAND, f"[{d}] {label}: {shown} (target >= {goal}x) {verdict}")


def _speed_targets(t: pd.DataFrame, d: str) -> list[dict]:
    base = f"{d}-baseline"
    ort_fp32 = Compile("onnxruntime").name
    inc_static = Quantize("static-int8", runtime="inc").name
    int8_ort = [Quantize(scheme, runtime="onnxruntime").name for scheme in ("dynamic-int8", "static-int8")]
    bf16_names = (Quantize("bf16").name, Quantize("bf16", autocast=True).name)
    bf16 = [_ratio(t, d, c, base, "thr_b256_per_s") for c in bf16_names]
    best = [_ratio(t, d, c, ort_fp32, "thr_b256_per_s") for c in int8_ort]
    return [
        _check(d, "ORT fp32 vs eager fp32, p50 at batch 1",
               _ratio(t, d, ort_fp32, base, "p50_b1_ms", inverse=True), 1.5),
        _check(d, "torch bf16 (best of cast/autocast) vs eager fp32, throughput b256",
               max([v for v in bf16 if v is not None], default=None), 2.0),
        _check(d, "INC PT2E static int8 + torch.compile(freezing) vs eager fp32, throughput b256",
               _ratio(t, d, inc_static, base, "thr_b256_per_s"), 3.0),
        _check(d, "(context) INC PT2E int8 compiled vs fp32 torch.compile(dynamic=False), throughput b256",
               _ratio(t, d, inc_static, Compile("torch.compile", dynamic=False).name, "thr_b256_per_s"), 1.0),
        _check(d, "ORT int8 (best of dynamic/static) vs ORT fp32, throughput b256",
               max([v for v in best if v is not None], default=None), 1.5),
    ]


def _quality_targets(t: pd.DataFrame, d: str) -> list[dict]:
    out = []
    rows = t[(t["dataset"] == d) & t["candidate"].str.contains("int8") & (t["status"] == "ok")]
    for _, r in rows.iterrows():
        if d == "bids":
            ok = r["drop"] <= 0.002 and r["logloss_change_pct"] <= 1.0
            quality = f"AUC drop {r['drop']:+.4f} (<= 0.002), logloss {r['logloss_change_pct']:+.2f}% (<= 1%)"
        else:
            ok = r["drop"] <= 0.005
            quality = f"accuracy drop {r['drop'] * 100:+.2f} pp (<= 0.5)"
        size_ok = r["size_ratio"] <= 0.35
        out.append(target(f"[{d}] {r['candidate']}: quality drop and size ratio", r["size_ratio"],
                          bool(ok and size_ok), COMMAND,
                          f"[{d}] {r['candidate']}: {quality} {'MET' if ok else 'MISSED'}; "
                          f"size {r['size_ratio']:.2f} of fp32 (<= 0.35) {'MET' if size_ok else 'MISSED'}"))
    return out


def targets(t: pd.DataFrame) -> list[dict]:
    """The targets table (render.target rows), judged on ratios from the same run."""
    out = []
    for d in sorted(set(t["dataset"])):
        out += _speed_targets(t, d) + _quality_targets(t, d)
    return out


def ort_op_profile(path: str | os.PathLike, batch: dict[str, np.ndarray], runs: int = 20, top: int = 8):
    """Which ONNX Runtime operators take the time, as (op_type, share, ms/run) (instruments.op_profile)."""
    frame = operator_times(path, [batch], threads=THREADS, runs=runs)
    return [(r.op_type, r.share, r.ms_per_pass) for r in frame.head(top).itertuples()]


def torch_op_profile(predict, batch: dict[str, np.ndarray], runs: int = 10, top: int = 8) -> str:
    predict(batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            predict(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def profile(name: str, smoke: bool, workdir: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per-operator time at batch 256: ONNX Runtime's operators for fp32 and int8 (a frame), and
    torch's profiler tables for eager fp32 and bf16 autocast (as torch prints them)."""
    model, data = reference(name, smoke=smoke)
    batch = {k: v[:256] for k, v in data.test.inputs.items()}
    ort_rows = []
    for recipe in (Compile("onnxruntime"), Quantize("dynamic-int8", runtime="onnxruntime"),
                   Quantize("static-int8", runtime="onnxruntime")):
        cand = apply(recipe, model, data, threads=THREADS, workdir=workdir / f"{name}-profile")
        ort_rows += [{"dataset": name, "candidate": recipe.name, "op_type": op, "share": share, "ms_per_run": ms}
                     for op, share, ms in ort_op_profile(cand.artifact_path, batch)]
    torch.set_num_threads(THREADS)
    predictors = (("eager fp32", torch_predict_fn(model)),
                  ("bf16 autocast", torch_predict_fn(model, autocast="bfloat16")))
    tables = {label: torch_op_profile(predict, batch) for label, predict in predictors}
    return pd.DataFrame(ort_rows), tables


def show_profile(out: Renderer, name: str, ort_ops: pd.DataFrame, torch_tables: dict[str, str]) -> None:
    for candidate, ops in ort_ops.groupby("candidate", sort=False):
        out.say(f"\n[{name}] ORT operators at batch 256, {candidate}:")
        for r in ops.itertuples():
            out.say(f"  {r.op_type:28s} {r.share * 100:5.1f}%  {r.ms_per_run:.3f} ms/run")
    for label, text in torch_tables.items():
        out.say(f"\n[{name}] torch operators at batch 256, {label}:")
        out.say(text)


def cpu_flags() -> str:
    """The speed-relevant CPU flags, as every optlab row records them."""
    return environment().cpu_flags or "none of the AVX2/AVX-512/AMX set"


def show(out: Renderer, rows: list[dict[str, Any]], t: pd.DataFrame) -> None:
    """The table, its errors, the targets and INC's autotune trials, for a reader."""
    out.candidates(f"\nCPU: {platform.processor() or platform.machine()}, flags: {cpu_flags()}; threads={THREADS}; "
                   f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}", rows, t, targets(t))
    for row in rows:
        trials = row.get("meta", {}).get("tuning_trials") if isinstance(row.get("meta"), dict) else None
        if trials:
            out.say(f"\n[{row['dataset']}] INC autotune trials (winner: {row['meta'].get('inc_config')}):")
            for trial in trials:
                out.say(f"   {trial}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlab.bench techniques")
    parser.add_argument("--smoke", action="store_true", help="small data and short timings, no torch.compile")
    parser.add_argument("--profile", action="store_true", help="also print per-operator time (ORT and torch)")
    parser.add_argument("--datasets", default="bids,digits")
    parser.add_argument("--json", default=None, help="write the tables (raw rows included) and targets to this file")
    args = parser.parse_args(argv)
    out = Renderer("techniques", " ".join([COMMAND, *argv]))
    workdir = Path(tempfile.mkdtemp(prefix="optlab-bench-techniques-"))
    rows = []
    with quiet_torch_logs():
        for name in args.datasets.split(","):
            rows += run_dataset(name, args.smoke, workdir, out.progress)
    show(out, rows, table(rows))
    if args.profile:
        for name in args.datasets.split(","):
            show_profile(out, name, *profile(name, args.smoke, workdir))
    out.write_json(args.json)
    return 0
