"""`python -m optlab.bench transformers --widths 64,128,256`: where int8 pays. The intents teacher's
shape at several widths, trained here, optimum O2 fp32 vs int8 at batch 32 beside the share of fp32
time in matrix products (the only part int8 speeds up; ONNX Runtime's profiler)."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from optlab.bench.intents import COMMAND, THREADS, batches, p50_ms, worst_length
from optlab.bench.render import Renderer, target
from optlab.data.datasets import load
from optlab.instruments import op_profile
from optlab.instruments.latency import torch_threads
from optlab.instruments.quality import evaluate, reference
from optlab.models import weights, zoo
from optlab.models.runtimes import quiet_torch_logs
from optlab.models.training import train
from optlab.recipes import Optimum
from optlab.techniques.registry import apply

INT8 = (("fp32", Optimum("O2")), ("dynamic", Optimum("O2", quantize="dynamic-int8")),
        ("static", Optimum("O2", quantize="static-int8")))


def _model(data, width: int, epochs: int, threads: int):
    """The zoo teacher's shape at `width` (feed-forward 2x), trained here with the zoo's loop."""
    spec = zoo.spec("intents", "teacher", data)
    spec["kwargs"] |= {"hidden": width, "intermediate": 2 * width}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = zoo.from_spec(spec)
    log = train(model, data, epochs=epochs, lr=1e-3, batch_size=16, warmup_fraction=0.1, threads=threads)
    return model, log


def _profile(cands: dict, b32, threads: int) -> dict[str, Any]:
    profiles = {k: op_profile.operator_times(cands[k].artifact_path, b32[:10], threads=threads)
                for k in ("fp32", "dynamic")}
    mm = {k: float(f.loc[f["matmul"], "ms_per_pass"].sum()) for k, f in profiles.items()}
    rest = {k: float(f.loc[~f["matmul"], "ms_per_pass"].sum()) for k, f in profiles.items()}
    return {"matmul_share": op_profile.matmul_share(profiles["fp32"]), "matmul_int8_x": mm["fp32"] / mm["dynamic"],
            "rest_int8_x": rest["fp32"] / rest["dynamic"], "profile": op_profile.describe(profiles["fp32"])}


def one_width(data, width: int, epochs: int, threads: int, rounds: int, budget: float, b32) -> dict[str, Any]:
    model, log = _model(data, width, epochs, threads)
    ref = reference(zoo.baseline(model, name=f"width-{width}"), data)
    workdir = tempfile.mkdtemp(prefix=f"optlab-bench-width{width}-")
    with quiet_torch_logs():
        cands = {label: apply(recipe, model, data, threads=threads, workdir=workdir) for label, recipe in INT8}
    p50s: dict[str, list[float]] = {k: [] for k in cands}
    with torch_threads(threads):
        for _ in range(rounds):  # interleaved: a shared machine's slow spells hit all alike
            for label, cand in cands.items():
                p50s[label].append(p50_ms(cand.predict, b32, budget / rounds))
    row: dict[str, Any] = {"width": width, "params": weights.param_count(model), "train_s": log.train_s,
                           **_profile(cands, b32, threads)}
    rows_s = {k: 32 / (float(np.median(v)) / 1e3) for k, v in p50s.items()}
    accs = {}
    for label, cand in cands.items():
        q = evaluate(cand, data, ref)
        accs[label] = q.accuracy
        row[f"{label}_worst"] = worst_length(q, with_rows=False)
    for label in ("dynamic", "static"):
        row[f"{label}_ratio"] = rows_s[label] / rows_s["fp32"]
        row[f"{label}_drop_pts"] = 100 * (accs[label] - accs["fp32"])
    return row | {"fp32_accuracy": accs["fp32"], "fp32_rows_s": rows_s["fp32"]}


def run_widths(widths: tuple[int, ...] = (64, 128, 256), epochs: int = 1, smoke: bool = False,
               threads: int = THREADS, rounds: int = 3) -> Iterator[dict[str, Any]]:
    """One row per width, as each finishes: the zoo teacher's shape (4 layers, 4 heads, feed-forward
    2x the width) trained here on the intents train split for `epochs` (the zoo's loop, batch 16, lr
    1e-3, `threads` threads; bench-only models, never cached), then optimum O2 fp32, dynamic and static
    int8 at batch 32 (longest-in-batch padding; interleaved rounds, median): throughput ratio, accuracy
    drop against O2 fp32 and the worst length slice, and the share of O2 fp32's ONNX Runtime time
    spent in matrix products, and how much faster dynamic int8 makes them (ONNX Runtime's profiler):
    int8 speeds up only those, and on narrow layers quantizing the activations eats the gain."""
    data = load("intents", smoke=smoke)
    budget = 1.0 if smoke else 4.0
    b32 = batches(data.test, 32, 30, "longest", int(data.meta["max_length"]))
    for width in widths:
        yield one_width(data, width, epochs, threads, rounds, budget, b32)


def show_widths(out: Renderer, rows: Iterator[dict[str, Any]], flag_text: str) -> pd.DataFrame:
    """Prints each width's two lines as it arrives, then where int8 pays most (a target row)."""
    out.say(f"{'width':>6}{'params':>10}{'train s':>8}{'fp32 acc':>9}{'fp32 rows/s':>12}{'matmul share':>13}"
            f"{'matmul int8':>12}  int8 (dynamic; static): throughput vs O2 fp32, accuracy pts, worst length slice")
    kept = []
    for row in rows:
        kept.append(row)
        int8 = "; ".join(f"{row[f'{k}_ratio']:.2f}x, {row[f'{k}_drop_pts']:+.2f}, {row[f'{k}_worst']}"
                         for k in ("dynamic", "static"))
        out.say(f"{row['width']:>6}{row['params']:>10,}{row['train_s']:>8.0f}{row['fp32_accuracy']:>9.4f}"
                f"{row['fp32_rows_s']:>12.0f}{row['matmul_share']:>13.0%}{row['matmul_int8_x']:>11.2f}x  {int8}")
        out.say(f"{'':>6}O2 fp32 time by operator: {row['profile']}; dynamic int8 makes the matrix products "
                f"{row['matmul_int8_x']:.2f}x faster, the rest {row['rest_int8_x']:.2f}x")
    frame = pd.DataFrame(kept)
    out.keep("widths", frame)
    best = max(kept, key=lambda r: max(r["dynamic_ratio"], r["static_ratio"]))
    ratio = max(best["dynamic_ratio"], best["static_ratio"])
    out.targets([target("int8 vs O2 fp32 at batch 32, best width", ratio, ratio >= 1.3, COMMAND + " --widths",
                        f"int8 pays most at width {best['width']}: {ratio:.2f}x over O2 fp32 at batch 32 (target >= "
                        f"1.3x {'met' if ratio >= 1.3 else 'missed'} there) [{flag_text}]. int8 speeds up the matrix "
                        f"products only, and pays when they are large: on narrow layers quantizing the activations "
                        f"costs about what the int8 products save (matmul int8: their own speedup, from ONNX "
                        f"Runtime's profile).")])
    return frame
