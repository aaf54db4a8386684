"""Where an ONNX Runtime model spends its time, by operator type, from ONNX Runtime's own profiler.

Why: int8 (and most compiler tricks) speed up the matrix products only. If they are a small
share of the time, no quantizer can make the model much faster (Amdahl's law), and the
profile says so before anyone blames the quantizer or the CPU. `operator_times(path, batches)`
returns a tidy frame; `matmul_share(frame)` the share spent in matrix-product operators;
`amdahl_bound(share, factor)` the whole-model speedup if those ran `factor` times faster;
`by_candidate({label: path}, batches)` sets candidates side by side (e.g. fp32 vs int8: did the
products get faster, and did the rest get slower?).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from optlab.models.runtimes import ort_predict_fn, ort_session

# pandas is imported on use: the profile's table is the only part that needs it.

# Operators that are (or, for the fused attention ops, mostly are) matrix products: what int8 and
# matrix engines accelerate. Attention counts whole (its QKV projection is most of it at these
# lengths), so the share and the bound are upper limits.
MATMUL_OPS = frozenset({
    "MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Conv", "FusedConv",
    "Attention", "MultiHeadAttention", "QAttention",
    "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm",
    "ConvInteger", "QLinearConv", "MatMulNBits",
})


def operator_times(path: str | os.PathLike, batches: Iterable[dict[str, np.ndarray]], *, threads: int | None = None,
                   runs: int = 3):
    """Profile `runs` passes over `batches` through ONNX Runtime (all graph optimizations, as served)
    and sum each operator type's kernel time: columns op_type, calls_per_pass, ms_per_pass, share,
    matmul (in MATMUL_OPS), sorted by time. One more pass runs first, in the same session, and its
    events are dropped (first calls grow the allocator's arenas)."""
    import pandas as pd

    batches = list(batches)
    if not batches:
        raise ValueError("operator_times() needs at least one batch to run")
    if runs < 1:
        raise ValueError(f"runs={runs}; profile at least one pass")
    prefix = os.path.join(tempfile.mkdtemp(prefix="optlab-op-profile-"), "ort")
    session = ort_session(path, threads=threads, profile_prefix=prefix)
    predict = ort_predict_fn(session)
    for _ in range(runs + 1):
        for batch in batches:
            predict(batch)
    profile = Path(session.end_profiling())
    try:
        events = json.loads(profile.read_text())
    finally:
        profile.unlink(missing_ok=True)
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    if len(model_runs) < len(batches):
        raise RuntimeError(f"ONNX Runtime's profile of {path} holds {len(model_runs)} runs for {len(batches)} calls")
    warm_end = model_runs[len(batches) - 1]["ts"] + model_runs[len(batches) - 1]["dur"]
    events = [e for e in events if e.get("ts", 0) > warm_end]
    ms: dict[str, float] = {}
    calls: dict[str, int] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            ms[op] = ms.get(op, 0.0) + event["dur"] / 1e3
            calls[op] = calls.get(op, 0) + 1
    whole = sum(ms.values()) or 1.0
    frame = pd.DataFrame({"op_type": list(ms), "calls_per_pass": [calls[op] / runs for op in ms],
                          "ms_per_pass": [ms[op] / runs for op in ms], "share": [ms[op] / whole for op in ms]})
    frame["matmul"] = frame["op_type"].isin(MATMUL_OPS)
    return frame.sort_values("ms_per_pass", ascending=False, ignore_index=True)


def matmul_share(frame) -> float:
    """The share of the profiled kernel time spent in matrix-product operators (MATMUL_OPS)."""
    return float(frame.loc[frame["matmul"], "share"].sum())


def amdahl_bound(share: float, factor: float) -> float:
    """The whole model's speedup when a `share` of its time runs `factor` times faster (Amdahl's law)."""
    if not 0.0 <= share <= 1.0 or factor <= 0:
        raise ValueError(f"share={share} must be in [0, 1] and factor={factor} > 0")
    return 1.0 / ((1.0 - share) + share / factor)


def describe(frame, top: int = 5) -> str:
    """One line: the top operators by share, e.g. 'Attention 43%, SkipLayerNormalization 35%, ...'."""
    return ", ".join(f"{r.op_type} {r.share:.0%}" for r in frame.head(top).itertuples())


def by_candidate(paths: dict[str, str | os.PathLike], batches: Iterable[dict[str, np.ndarray]], *,
                 threads: int | None = None, runs: int = 3):
    """One row per ONNX file in `paths` (label -> path), profiled on the same `batches`: columns
    candidate, matmul_ms_per_pass, other_ms_per_pass, total_ms_per_pass, matmul_share, top_operators;
    and against the first row, matmul_x and other_x (how much faster each part got) and total_x."""
    import pandas as pd

    batches = list(batches)
    rows = []
    for label, path in paths.items():
        frame = operator_times(path, batches, threads=threads, runs=runs)
        matmul = float(frame.loc[frame["matmul"], "ms_per_pass"].sum())
        other = float(frame.loc[~frame["matmul"], "ms_per_pass"].sum())
        rows.append({"candidate": label, "matmul_ms_per_pass": matmul, "other_ms_per_pass": other,
                     "total_ms_per_pass": matmul + other, "matmul_share": matmul_share(frame),
                     "top_operators": describe(frame, top=4)})
    table = pd.DataFrame(rows)
    first = table.iloc[0]
    for part in ("matmul", "other", "total"):
        table[f"{part}_x"] = first[f"{part}_ms_per_pass"] / table[f"{part}_ms_per_pass"]
    return table
