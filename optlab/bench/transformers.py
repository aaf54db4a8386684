"""`python -m optlab.bench transformers [--smoke] [--threads 2] [--distill]`: the intents BERT
through optimum (ONNX Runtime) and plain PyTorch, side by side in one process, equal threads.

Prints its targets with the CPU flags beside them:
- optimum O2 fp32 vs PyTorch eager fp32 (inference mode) at batch 1 on the test rows' real
  lengths: the p50 ratio (target >= 1.5x);
- optimum int8 (dynamic, static) vs O2 fp32 at batch 32: throughput ratio (target >= 1.3x),
  accuracy drop (<= 1 point) and the worst length slice;
- padding each batch to its longest row vs to the fixed max length: the throughput ratio;
- tokenization (the fast `tokenizers` tokenizer, batch encode) as a share of a request;
- `--distill`: the 2-layer student distilled from the teacher vs trained from scratch, accuracy
  with 95% intervals and the speedup over the teacher.

`python -m optlab.bench transformers --widths 64,128,256 [--width-epochs 1]` prints only where int8
pays: the teacher's shape at several widths, trained here, O2 fp32 vs int8 at batch 32 beside the
share of fp32 time in matrix products (the only part int8 speeds up; ONNX Runtime's profiler).

`python -m optlab.bench transformers --bucketing [--smoke] [--sla-ms 250] [--edges 16,32,64,128]`
prints only the serving figures instead: the O2 fp32 ONNX candidate serving the intents requests
(their real, long-tailed lengths), plain dynamic vs length-bucketed batching with the same batch
limit, wait and threads: token positions computed per request, capacity, throughput at the SLA.
"""
from __future__ import annotations

import argparse
import tempfile
from typing import Any

import numpy as np
import pandas as pd

from optlab.bench.bucketing import run_bucketing, show_bucketing
from optlab.bench.intents import (
    COMMAND,
    SPEED_FLAGS,
    THREADS,
    batches,
    interval,
    p50_ms,
    single_rows,
    speed_flags,
    tokenize_ms,
    worst_length,
)
from optlab.bench.render import Col, Layout, Renderer, target
from optlab.bench.widths import run_widths, show_widths
from optlab.bench.zoo import cpu_model
from optlab.data.datasets import load
from optlab.instruments.latency import torch_threads
from optlab.instruments.quality import evaluate, reference
from optlab.models import zoo
from optlab.models.runtimes import quiet_torch_logs
from optlab.recipes import Distill, Optimum
from optlab.techniques.optimum import compare_padding
from optlab.techniques.registry import apply

ROUNDS = 3


def time_candidates(cands: dict, data, ref, singles, b32, budget: float) -> pd.DataFrame:
    """Accuracy, the worst length slice, batch-1 p50 and batch-32 throughput per candidate, timed in
    interleaved rounds (median of per-round p50s): a shared machine's slow spells hit all alike."""
    b1s: dict[str, list[float]] = {k: [] for k in cands}
    b32s: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(ROUNDS):
        for label, cand in cands.items():
            b1s[label].append(p50_ms(cand.predict, singles, budget / ROUNDS))
            b32s[label].append(p50_ms(cand.predict, b32, budget / ROUNDS))
    rows = []
    for label, cand in cands.items():
        q = evaluate(cand, data, ref)
        rows.append({"candidate": label, "accuracy": q.accuracy, "drop_pts": 100 * (q.quality_drop or 0.0),
                     "worst_length_slice": worst_length(q), "b1_p50_ms": float(np.median(b1s[label])),
                     "b32_rows_per_s": 32 / (float(np.median(b32s[label])) / 1e3),
                     "fused": ",".join(k for k, v in cand.meta.get("fusions", {}).items() if v) or "-"})
    return pd.DataFrame(rows)


def padding_and_tokens(o2, data, budget: float) -> dict[str, Any]:
    """Throughput by padding (max length, longest in batch, length-bucketed) and the fast tokenizer's
    p50 at batch 1 and 32, on the O2 fp32 candidate."""
    max_length = int(data.meta["max_length"])
    padding = compare_padding(o2, data.test, batch_size=32, batches=30, max_length=max_length, budget_s=budget)
    texts = np.asarray(data.meta["texts"]["test"][:32 * 30], dtype=object)
    path = data.meta["tokenizer_path"]
    tok32 = tokenize_ms(path, [texts[i:i + 32] for i in range(0, len(texts), 32)], max_length, budget)
    tok1 = tokenize_ms(path, [texts[i:i + 1] for i in range(200)], max_length, budget)
    return {"padding": padding, "max_length": max_length, "tokenize_b1_ms": tok1, "tokenize_b32_ms": tok32}


def distill_rows(teacher, data, ref, singles, budget: float, threads: int, workdir: str) -> pd.DataFrame:
    """The 2-layer student distilled from the teacher and trained from scratch: accuracy and batch-1 p50."""
    rows = []
    for label, recipe in (("distilled", Distill()), ("from scratch", Distill(from_scratch=True))):
        student = apply(recipe, teacher, data, threads=threads, workdir=workdir)
        accuracy = evaluate(student, data, ref).accuracy
        with torch_threads(threads):
            b1 = p50_ms(student.predict, singles, budget)
        rows.append({"student": label, "accuracy": accuracy, "b1_p50_ms": b1,
                     "epochs_run": student.meta.get("epochs_run"), "stopped_by": student.meta.get("stopped_by")})
    return pd.DataFrame(rows)


def run(smoke: bool = False, threads: int = THREADS, distill: bool = False) -> dict[str, Any]:
    """Every figure of the default command, as data: `candidates` (a frame), `padding` (a frame),
    tokenizer times, `students` (a frame, with `distill`), the speed flags and int8's preset."""
    data = load("intents", smoke=smoke)
    teacher = zoo.get("intents", "teacher", smoke=smoke, data=data)
    base = zoo.baseline(teacher)
    ref = reference(base, data)
    workdir = tempfile.mkdtemp(prefix="optlab-bench-transformers-")
    recipes = {"O2 fp32": Optimum("O2"), "O2 dynamic int8": Optimum("O2", quantize="dynamic-int8"),
               "O2 static int8": Optimum("O2", quantize="static-int8")}
    with quiet_torch_logs():
        cands = {"torch eager fp32": base}
        cands |= {label: apply(r, teacher, data, threads=threads, workdir=workdir) for label, r in recipes.items()}
    budget = 1.0 if smoke else 4.0
    singles = single_rows(data.test, 200)
    b32 = batches(data.test, 32, 30, "longest", int(data.meta["max_length"]))
    out: dict[str, Any] = {"flags": speed_flags(), "preset": cands["O2 dynamic int8"].meta.get("preset"),
                           "test_rows": len(data.test)}
    with torch_threads(threads):
        out["candidates"] = time_candidates(cands, data, ref, singles, b32, budget)
        out |= padding_and_tokens(cands["O2 fp32"], data, budget)
    if distill:
        with quiet_torch_logs():
            out["students"] = distill_rows(teacher, data, ref, singles, budget, threads, workdir)
    return out


CANDIDATES = Layout((
    Col("candidate", "candidate", 20, "<"), Col("accuracy", "accuracy", 9, spec=".4f"),
    Col("drop_pts", "drop pts", 9, spec=".2f"),
    Col("worst_length_slice", "worst length slice (drop pts)", 32, "<", before="  "),
    Col("b1_p50_ms", "b1 p50 ms", 10, spec=".2f"), Col("b32_rows_per_s", "b32 rows/s", 11, spec=".0f"),
    Col("fused", "fused", 0, "<", before="  ")))


def _int8_target(row: dict, fp32: dict, flags: list[str], preset: Any) -> dict:
    flag_text = ",".join(flags) or "no avx2"
    ratio = row["b32_rows_per_s"] / fp32["b32_rows_per_s"]
    drop = 100 * (row["accuracy"] - fp32["accuracy"])
    verdict = "" if ratio >= 1.3 else " - int8 does not pay here" + (
        " (no VNNI)" if "avx512_vnni" not in flags else "") + (
        "; `--widths 64,128,256` shows the width at which it starts to pay")
    return target(f"{row['candidate']} vs O2 fp32, batch 32 throughput ratio", ratio, ratio >= 1.3 and drop >= -1,
                  COMMAND, f"target {row['candidate']} vs O2 fp32, batch 32 throughput: {ratio:.2f}x (target >= 1.3x), "
                  f"accuracy {drop:+.2f} pts vs O2 fp32 (target >= -1), worst length slice "
                  f"{row['worst_length_slice']}, preset {preset} [{flag_text}]{verdict}")


def targets(result: dict[str, Any]) -> list[dict]:
    """The default command's targets table (render.target rows)."""
    rows = {r["candidate"]: r for r in result["candidates"].to_dict(orient="records")}
    eager, fp32 = rows["torch eager fp32"], rows["O2 fp32"]
    speed_b1 = eager["b1_p50_ms"] / fp32["b1_p50_ms"]
    flag_text = ",".join(result["flags"]) or "no avx2"
    out = [target("optimum O2 fp32 vs torch eager fp32, batch 1 p50 ratio", speed_b1, speed_b1 >= 1.5, COMMAND,
                  f"target optimum O2 fp32 vs torch eager fp32, batch 1 p50: {speed_b1:.2f}x (target >= 1.5x) "
                  f"[{flag_text}]")]
    out += [_int8_target(rows[label], fp32, result["flags"], result["preset"])
            for label in ("O2 dynamic int8", "O2 static int8")]
    return out


def context_lines(result: dict[str, Any]) -> list[str]:
    """Padding and tokenization: figures without a target, as sentences."""
    frame, max_length = result["padding"], result["max_length"]
    pad = dict(zip(frame["padding"], frame["rows_per_s"], strict=True))
    share = dict(zip(frame["padding"], frame["padding_share"], strict=True))
    fp32 = result["candidates"].set_index("candidate").loc["O2 fp32"]
    tok1, tok32 = result["tokenize_b1_ms"], result["tokenize_b32_ms"]
    share1 = tok1 / (tok1 + fp32["b1_p50_ms"])
    share32 = tok32 / (tok32 + 32e3 / fp32["b32_rows_per_s"])
    return [f"padding at batch 32 (O2 fp32), throughput vs max_length={max_length}: longest-in-batch "
            f"{pad['longest'] / pad['max_length']:.2f}x, length-bucketed {pad['bucketed'] / pad['max_length']:.2f}x "
            f"({pad['max_length']:.0f} / {pad['longest']:.0f} / {pad['bucketed']:.0f} rows/s; padding share "
            f"{share['max_length']:.0%} / {share['longest']:.0%} / {share['bucketed']:.0%})",
            f"tokenization share of a request (fast tokenizer, O2 fp32 model): batch 1 {100 * share1:.0f}% "
            f"({tok1:.3f} ms), batch 32 (batch encode) {100 * share32:.0f}% ({tok32:.3f} ms)"]


def student_lines(result: dict[str, Any]) -> list[str]:
    eager = result["candidates"].set_index("candidate").loc["torch eager fp32"]
    n, t_acc = result["test_rows"], eager["accuracy"]
    t_low, t_high = interval(t_acc, n)
    lines = []
    for r in result["students"].to_dict(orient="records"):
        low, high = interval(r["accuracy"], n)
        lines.append(f"student {r['student']}: accuracy {r['accuracy']:.4f} [{low:.4f}, {high:.4f}] vs teacher "
                     f"{t_acc:.4f} [{t_low:.4f}, {t_high:.4f}]: {100 * r['accuracy'] / t_acc:.1f}% retained, batch 1 "
                     f"p50 {eager['b1_p50_ms'] / r['b1_p50_ms']:.2f}x faster than the teacher (torch eager); trained "
                     f"{r['epochs_run']} epochs, stopped by {r['stopped_by']}")
    return lines


def show(out: Renderer, result: dict[str, Any]) -> None:
    out.table("candidates", CANDIDATES, result["candidates"].to_dict(orient="records"))
    out.keep("padding", result["padding"])
    out.blank()
    out.targets(targets(result))
    for line in context_lines(result):
        out.say(line)
    if "students" in result:
        out.keep("students", result["students"])
        for line in student_lines(result):
            out.say(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="smoke data and the smoke teacher (CI)")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads for torch and ONNX Runtime alike")
    parser.add_argument("--distill", action="store_true", help="also distill the 2-layer student (trains twice)")
    parser.add_argument("--widths", default=None,
                        help="only where int8 pays: e.g. 64,128,256 (4-layer BERTs trained here, --width-epochs)")
    parser.add_argument("--width-epochs", type=int, default=1, help="--widths: training epochs per width")
    parser.add_argument("--bucketing", action="store_true",
                        help="only the serving figure: bucketed vs plain dynamic batching at the SLA")
    parser.add_argument("--sla-ms", type=float, default=250.0, help="--bucketing: the p99 limit")
    parser.add_argument("--edges", default="16,32,64,128", help="--bucketing: the bucket edges in tokens")
    parser.add_argument("--max-batch", type=int, default=8, help="--bucketing: requests per model call, both policies")
    parser.add_argument("--wait-ms", type=float, default=2.0, help="--bucketing: max wait, both policies")
    parser.add_argument("--json", default=None, help="write the tables and targets to this file")
    args = parser.parse_args(argv or [])
    out = Renderer("transformers", " ".join([COMMAND, *(argv or [])]))
    setting = "smoke" if args.smoke else "full"
    flag_text = ",".join(speed_flags()) or "no avx2"
    if args.widths:
        widths = tuple(int(w) for w in args.widths.split(","))
        out.say(f"CPU: {cpu_model()} | flags: {flag_text} | threads: {args.threads} (training, torch and ONNX "
                f"Runtime) | setting: {setting} | {args.width_epochs} epoch(s) per width")
        show_widths(out, run_widths(widths, epochs=args.width_epochs, smoke=args.smoke, threads=args.threads),
                    flag_text)
    elif args.bucketing:
        out.say(f"CPU: {cpu_model()} | flags: {flag_text} | threads: {args.threads} per server (ONNX Runtime), "
                f"1 worker | setting: {setting}")
        show_bucketing(out, run_bucketing(smoke=args.smoke, threads=args.threads, sla_ms=args.sla_ms,
                                          max_batch=args.max_batch, max_wait_ms=args.wait_ms,
                                          edges=tuple(int(e) for e in args.edges.split(",")),
                                          progress=out.progress), flag_text)
    else:
        shown = " ".join(f for f in SPEED_FLAGS if f in speed_flags()) or "none of " + " ".join(SPEED_FLAGS)
        out.say(f"CPU: {cpu_model()} | flags: {shown} | threads: {args.threads} (torch and ONNX Runtime) | "
                f"setting: {setting}")
        show(out, run(smoke=args.smoke, threads=args.threads, distill=args.distill))
    out.write_json(args.json)
    return 0
