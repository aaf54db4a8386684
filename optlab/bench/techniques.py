"""`python -m optlab.bench techniques [--smoke] [--profile] [--datasets bids,digits]`

Builds every quantization/compilation candidate for the reference models, measures them
side by side in one run (p50/p99 at batch 1, throughput at batch 256, size) and evaluates
them against the eager fp32 baseline, then checks the issue's targets as ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

THREADS = 2


def recipes(smoke: bool) -> list[Any]:
    from optlab.recipes.recipe import Chain, Compile, Quantize

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
    from optlab.data.datasets import load
    from optlab.models import zoo

    data = load(name, smoke=smoke)
    return zoo.get(name, smoke=smoke, data=data), data


def run_dataset(name: str, smoke: bool, workdir: Path) -> list[dict[str, Any]]:
    from optlab.bench import rows as rows_module
    from optlab.instruments.latency import Workload
    from optlab.models import zoo
    from optlab.models.runtimes import quiet_torch_logs

    quiet_torch_logs()
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
        print(f"  {name}: {row.get('candidate')} [{row['status']}] {time.perf_counter() - started:.1f}s", flush=True)
    return rows


def table(rows: list[dict[str, Any]]):
    import pandas as pd

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


def targets(t) -> list[str]:
    from optlab.recipes.recipe import Compile, Quantize

    lines = []
    base = lambda d: f"{d}-baseline"  # noqa: E731
    ort_fp32 = Compile("onnxruntime").name
    int8_ort = [
        Quantize("dynamic-int8", runtime="onnxruntime").name,
        Quantize("static-int8", runtime="onnxruntime").name,
    ]
    inc_static = Quantize("static-int8", runtime="inc").name
    for d in sorted(set(t["dataset"])):
        def check(label, value, goal, d=d):
            verdict = "n/a" if value is None else ("MET" if value >= goal else "MISSED")
            shown = "n/a" if value is None else f"{value:.2f}x"
            lines.append(f"[{d}] {label}: {shown} (target >= {goal}x) {verdict}")

        check("ORT fp32 vs eager fp32, p50 at batch 1", _ratio(t, d, ort_fp32, base(d), "p50_b1_ms", inverse=True), 1.5)
        bf16 = [_ratio(t, d, c, base(d), "thr_b256_per_s") for c in
                (Quantize("bf16").name, Quantize("bf16", autocast=True).name)]
        check("torch bf16 (best of cast/autocast) vs eager fp32, throughput b256",
              max([v for v in bf16 if v is not None], default=None), 2.0)
        check("INC PT2E static int8 + torch.compile(freezing) vs eager fp32, throughput b256",
              _ratio(t, d, inc_static, base(d), "thr_b256_per_s"), 3.0)
        check("(context) INC PT2E int8 compiled vs fp32 torch.compile(dynamic=False), throughput b256",
              _ratio(t, d, inc_static, Compile("torch.compile", dynamic=False).name, "thr_b256_per_s"), 1.0)
        best = [_ratio(t, d, c, ort_fp32, "thr_b256_per_s") for c in int8_ort]
        check("ORT int8 (best of dynamic/static) vs ORT fp32, throughput b256",
              max([v for v in best if v is not None], default=None), 1.5)
        rows = t[(t["dataset"] == d) & t["candidate"].str.contains("int8") & (t["status"] == "ok")]
        for _, r in rows.iterrows():
            if d == "bids":
                ok = r["drop"] <= 0.002 and r["logloss_change_pct"] <= 1.0
                quality = f"AUC drop {r['drop']:+.4f} (<= 0.002), logloss {r['logloss_change_pct']:+.2f}% (<= 1%)"
            else:
                ok = r["drop"] <= 0.005
                quality = f"accuracy drop {r['drop'] * 100:+.2f} pp (<= 0.5)"
            size_ok = r["size_ratio"] <= 0.35
            lines.append(f"[{d}] {r['candidate']}: {quality} {'MET' if ok else 'MISSED'}; "
                         f"size {r['size_ratio']:.2f} of fp32 (<= 0.35) {'MET' if size_ok else 'MISSED'}")
    return lines


def ort_op_profile(path: str | os.PathLike, batch: dict[str, np.ndarray], runs: int = 20, top: int = 8):
    """Which ONNX Runtime operators take the time, as (op_type, share, ms/run) (instruments.op_profile)."""
    from optlab.instruments.op_profile import operator_times

    frame = operator_times(path, [batch], threads=THREADS, runs=runs)
    return [(r.op_type, r.share, r.ms_per_pass) for r in frame.head(top).itertuples()]


def torch_op_profile(predict, batch: dict[str, np.ndarray], runs: int = 10, top: int = 8) -> str:
    import torch

    predict(batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            predict(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def profile(name: str, smoke: bool, workdir: Path) -> None:
    from optlab.models.runtimes import torch_predict_fn
    from optlab.recipes.recipe import Compile, Quantize
    from optlab.techniques.registry import apply

    model, data = reference(name, smoke=smoke)
    batch = {k: v[:256] for k, v in data.test.inputs.items()}
    for recipe in (Compile("onnxruntime"), Quantize("dynamic-int8", runtime="onnxruntime"),
                   Quantize("static-int8", runtime="onnxruntime")):
        cand = apply(recipe, model, data, threads=THREADS, workdir=workdir / f"{name}-profile")
        print(f"\n[{name}] ORT operators at batch 256, {recipe.name}:")
        for op, share, ms in ort_op_profile(cand.artifact_path, batch):
            print(f"  {op:28s} {share * 100:5.1f}%  {ms:.3f} ms/run")
    import torch

    torch.set_num_threads(THREADS)
    for label, predict in (("eager fp32", torch_predict_fn(model)),
                           ("bf16 autocast", torch_predict_fn(model, autocast="bfloat16"))):
        print(f"\n[{name}] torch operators at batch 256, {label}:")
        print(torch_op_profile(predict, batch))


def cpu_flags() -> str:
    """The speed-relevant CPU flags, as every optlab row records them."""
    from optlab.instruments.environment import environment

    return environment().cpu_flags or "none of the AVX2/AVX-512/AMX set"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlab.bench techniques")
    parser.add_argument("--smoke", action="store_true", help="small data and short timings, no torch.compile")
    parser.add_argument("--profile", action="store_true", help="also print per-operator time (ORT and torch)")
    parser.add_argument("--datasets", default="bids,digits")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    import pandas as pd

    workdir = Path(tempfile.mkdtemp(prefix="optlab-bench-techniques-"))
    rows = []
    for name in args.datasets.split(","):
        rows += run_dataset(name, args.smoke, workdir)
    t = table(rows)
    import platform

    import onnxruntime
    import torch

    print(f"\nCPU: {platform.processor() or platform.machine()}, flags: {cpu_flags()}; threads={THREADS}; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    with pd.option_context("display.max_rows", 200, "display.width", 250, "display.max_colwidth", 60):
        print(t.drop(columns=["error"]).to_string(index=False))
        errors = t[t["status"] == "error"]
        if len(errors):
            print("\nerrors:\n" + errors[["dataset", "candidate", "error"]].to_string(index=False))
    print("\ntargets (ratios from the same run; others share these cores, so expect noise):")
    for line in targets(t):
        print("  " + line)
    for row in rows:
        trials = row.get("meta", {}).get("tuning_trials") if isinstance(row.get("meta"), dict) else None
        if trials:
            print(f"\n[{row['dataset']}] INC autotune trials (winner: {row['meta'].get('inc_config')}):")
            for trial in trials:
                print("  ", trial)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, default=str, indent=1))
    if args.profile:
        for name in args.datasets.split(","):
            profile(name, args.smoke, workdir)
    return 0
