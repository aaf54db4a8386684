"""`python -m optlab.bench transformers [--smoke] [--threads 2] [--distill]`: the intents BERT
through optimum (ONNX Runtime) and plain PyTorch, side by side in one process, equal threads.

Prints the issue's targets with the CPU flags beside them:
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
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from optlab.bench.zoo import cpu_model

THREADS = 2
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def _interval(p: float, n: int) -> tuple[float, float]:
    half = 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    return p - half, p + half


def _single_rows(split, n: int) -> list[dict[str, np.ndarray]]:
    from optlab.data.datasets import trim_padding

    return [trim_padding({k: v[i:i + 1] for k, v in split.inputs.items()}) for i in range(min(n, len(split)))]


def _batches(split, size: int, n: int, padding: str, max_length: int) -> list[dict[str, np.ndarray]]:
    from optlab.techniques.optimum import padded

    return [padded({k: v[i:i + size] for k, v in split.inputs.items()}, padding, max_length)
            for i in range(0, min(n * size, len(split) - size + 1), size)]


def _p50_ms(fn, batches, budget_s: float) -> float:
    from optlab.instruments.timing import summarize, time_calls

    run = time_calls(fn, batches, warmup=5, min_samples=30, max_samples=3000, budget_s=budget_s)
    return summarize(run.samples_ns, n_boot=200).p50_ms


def _tokenize_ms(tokenizer_path: str, texts, max_length: int, budget_s: float) -> float:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")  # to the longest in the batch
    return _p50_ms(lambda chunk: tok.encode_batch(list(chunk)), texts, budget_s)


def run(smoke: bool = False, threads: int = THREADS, distill: bool = False) -> dict[str, Any]:
    from optlab.data.datasets import load
    from optlab.instruments.environment import cpu_info
    from optlab.instruments.latency import torch_threads
    from optlab.instruments.quality import evaluate, reference
    from optlab.models import zoo
    from optlab.models.runtimes import quiet_torch_logs
    from optlab.recipes import Distill, Optimum
    from optlab.techniques.optimum import compare_padding
    from optlab.techniques.registry import apply

    quiet_torch_logs()
    _, flags = cpu_info()
    shown = " ".join(f for f in SPEED_FLAGS if f in flags) or "none of " + " ".join(SPEED_FLAGS)
    print(f"CPU: {cpu_model()} | flags: {shown}"
          f" | threads: {threads} (torch and ONNX Runtime) | setting: {'smoke' if smoke else 'full'}", flush=True)
    data = load("intents", smoke=smoke)
    teacher = zoo.get("intents", "teacher", smoke=smoke, data=data)
    base = zoo.baseline(teacher)
    ref = reference(base, data)
    workdir = tempfile.mkdtemp(prefix="optlab-bench-transformers-")
    recipes = {"O2 fp32": Optimum("O2"), "O2 dynamic int8": Optimum("O2", quantize="dynamic-int8"),
               "O2 static int8": Optimum("O2", quantize="static-int8")}
    cands = {"torch eager fp32": base}
    cands |= {label: apply(r, teacher, data, threads=threads, workdir=workdir) for label, r in recipes.items()}
    budget = 1.0 if smoke else 4.0
    max_length = int(data.meta["max_length"])
    singles = _single_rows(data.test, 200)
    b32 = _batches(data.test, 32, 30, "longest", max_length)
    out: dict[str, Any] = {"flags": sorted(f for f in SPEED_FLAGS if f in flags),
                           "preset": cands["O2 dynamic int8"].meta.get("preset")}
    print(f"{'candidate':<20}{'accuracy':>9}{'drop pts':>9}  {'worst length slice (drop pts)':<32}{'b1 p50 ms':>10}"
          f"{'b32 rows/s':>11}  fused", flush=True)
    rows = {}
    with torch_threads(threads):
        # timed in interleaved rounds (median of per-round p50s): a shared machine's slow spells hit all alike
        rounds = 3
        b1s: dict[str, list[float]] = {k: [] for k in cands}
        b32s: dict[str, list[float]] = {k: [] for k in cands}
        for _ in range(rounds):
            for label, cand in cands.items():
                b1s[label].append(_p50_ms(cand.predict, singles, budget / rounds))
                b32s[label].append(_p50_ms(cand.predict, b32, budget / rounds))
        for label, cand in cands.items():
            q = evaluate(cand, data, ref)
            b1 = float(np.median(b1s[label]))
            t32 = 32 / (float(np.median(b32s[label])) / 1e3)
            by_length = [e for e in q.slices if e["slice"] == "length" and "drop" in e]
            worst = max(by_length, key=lambda e: e["drop"]) if by_length else None
            rows[label] = {"accuracy": q.accuracy, "drop": q.quality_drop or 0.0, "b1_p50_ms": b1, "b32_rows_s": t32,
                           "worst": "-" if worst is None else
                           f"length={worst['group']} ({100 * worst['drop']:+.1f}, {worst['rows']} rows)"}
            fused = ",".join(k for k, v in cand.meta.get("fusions", {}).items() if v) or "-"
            print(f"{label:<20}{q.accuracy:>9.4f}{100 * rows[label]['drop']:>9.2f}  {rows[label]['worst']:<32}"
                  f"{b1:>10.2f}{t32:>11.0f}  {fused}", flush=True)
        o2 = cands["O2 fp32"]
        frame = compare_padding(o2, data.test, batch_size=32, batches=30, max_length=max_length, budget_s=budget)
        pad = dict(zip(frame["padding"], frame["rows_per_s"], strict=True))
        share = dict(zip(frame["padding"], frame["padding_share"], strict=True))
        texts = np.asarray(data.meta["texts"]["test"][:32 * 30], dtype=object)
        tok32 = _tokenize_ms(data.meta["tokenizer_path"], [texts[i:i + 32] for i in range(0, len(texts), 32)],
                             max_length, budget)
        tok1 = _tokenize_ms(data.meta["tokenizer_path"], [texts[i:i + 1] for i in range(200)], max_length, budget)
    eager, fp32 = rows["torch eager fp32"], rows["O2 fp32"]
    speed_b1 = eager["b1_p50_ms"] / fp32["b1_p50_ms"]
    flag_text = ",".join(out["flags"]) or "no avx2"
    print(f"\ntarget optimum O2 fp32 vs torch eager fp32, batch 1 p50: {speed_b1:.2f}x (target >= 1.5x) "
          f"[{flag_text}]")
    for label in ("O2 dynamic int8", "O2 static int8"):
        r = rows[label]
        ratio = r["b32_rows_s"] / fp32["b32_rows_s"]
        drop = 100 * (r["accuracy"] - fp32["accuracy"])
        verdict = "" if ratio >= 1.3 else " - int8 does not pay here" + (
            " (no VNNI)" if "avx512_vnni" not in out["flags"] else "") + (
            "; `--widths 64,128,256` shows the width at which it starts to pay")
        print(f"target {label} vs O2 fp32, batch 32 throughput: {ratio:.2f}x (target >= 1.3x), accuracy "
              f"{drop:+.2f} pts vs O2 fp32 (target >= -1), worst length slice {r['worst']}, preset {out['preset']} "
              f"[{flag_text}]{verdict}")
        out[f"{label} throughput ratio"] = ratio
    print(f"padding at batch 32 (O2 fp32), throughput vs max_length={max_length}: longest-in-batch "
          f"{pad['longest'] / pad['max_length']:.2f}x, length-bucketed {pad['bucketed'] / pad['max_length']:.2f}x "
          f"({pad['max_length']:.0f} / {pad['longest']:.0f} / {pad['bucketed']:.0f} rows/s; padding share "
          f"{share['max_length']:.0%} / {share['longest']:.0%} / {share['bucketed']:.0%})")
    share1 = tok1 / (tok1 + fp32["b1_p50_ms"])
    share32 = tok32 / (tok32 + 32e3 / fp32["b32_rows_s"])
    print(f"tokenization share of a request (fast tokenizer, O2 fp32 model): batch 1 {100 * share1:.0f}% "
          f"({tok1:.3f} ms), batch 32 (batch encode) {100 * share32:.0f}% ({tok32:.3f} ms)")
    out |= {"o2_vs_eager_b1": speed_b1, "padding_ratio": pad["longest"] / pad["max_length"],
            "bucketed_ratio": pad["bucketed"] / pad["max_length"],
            "tokenize_share_b1": share1, "rows": rows}
    if distill:
        n = len(data.test)
        t_acc = rows["torch eager fp32"]["accuracy"]
        for label, recipe in (("distilled", Distill()), ("from scratch", Distill(from_scratch=True))):
            student = apply(recipe, teacher, data, threads=threads, workdir=workdir)
            acc = evaluate(student, data, ref).accuracy
            with torch_threads(threads):
                b1 = _p50_ms(student.predict, singles, budget)
            low, high = _interval(acc, n)
            t_low, t_high = _interval(t_acc, n)
            print(f"student {label}: accuracy {acc:.4f} [{low:.4f}, {high:.4f}] vs teacher {t_acc:.4f} "
                  f"[{t_low:.4f}, {t_high:.4f}]: {100 * acc / t_acc:.1f}% retained, batch 1 p50 "
                  f"{eager['b1_p50_ms'] / b1:.2f}x faster than the teacher (torch eager); trained "
                  f"{student.meta.get('epochs_run')} epochs, stopped by {student.meta.get('stopped_by')}", flush=True)
            out[f"student {label}"] = acc
    return out


# --- where int8 pays: the same BERT at several widths ----------------------------------------------

def run_widths(widths: tuple[int, ...] = (64, 128, 256), epochs: int = 1, smoke: bool = False,
               threads: int = THREADS, rounds: int = 3) -> list[dict[str, Any]]:
    """The zoo teacher's shape (4 layers, 4 heads, feed-forward 2x the width) at each width, trained
    here on the intents train split for `epochs` (the zoo's loop, batch 16, lr 1e-3, `threads`
    threads; bench-only models, never cached), then optimum O2 fp32, dynamic and static int8 at
    batch 32 (longest-in-batch padding; interleaved rounds, median): throughput ratio, accuracy
    drop against O2 fp32 and the worst length slice, and the share of O2 fp32's ONNX Runtime time
    spent in matrix products, and how much faster dynamic int8 makes them (ONNX Runtime's profiler):
    int8 speeds up only those, and on narrow layers quantizing the activations eats the gain."""
    import torch

    from optlab.data.datasets import load
    from optlab.instruments import op_profile
    from optlab.instruments.environment import cpu_info
    from optlab.instruments.latency import torch_threads
    from optlab.instruments.quality import evaluate, reference
    from optlab.models import weights, zoo
    from optlab.models.runtimes import quiet_torch_logs
    from optlab.models.training import train
    from optlab.recipes import Optimum
    from optlab.techniques.registry import apply

    quiet_torch_logs()
    _, flags = cpu_info()
    flag_text = ",".join(f for f in SPEED_FLAGS if f in flags) or "no avx2"
    data = load("intents", smoke=smoke)
    budget = 1.0 if smoke else 4.0
    b32 = _batches(data.test, 32, 30, "longest", int(data.meta["max_length"]))
    print(f"CPU: {cpu_model()} | flags: {flag_text} | threads: {threads} (training, torch and ONNX Runtime) | "
          f"setting: {'smoke' if smoke else 'full'} | {epochs} epoch(s) per width", flush=True)
    print(f"{'width':>6}{'params':>10}{'train s':>8}{'fp32 acc':>9}{'fp32 rows/s':>12}{'matmul share':>13}"
          f"{'matmul int8':>12}  int8 (dynamic; static): throughput vs O2 fp32, accuracy pts, worst length slice",
          flush=True)
    out = []
    for width in widths:
        spec = zoo.spec("intents", "teacher", data)
        spec["kwargs"] |= {"hidden": width, "intermediate": 2 * width}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = zoo.from_spec(spec)
        log = train(model, data, epochs=epochs, lr=1e-3, batch_size=16, warmup_fraction=0.1, threads=threads)
        ref = reference(zoo.baseline(model, name=f"width-{width}"), data)
        workdir = tempfile.mkdtemp(prefix=f"optlab-bench-width{width}-")
        cands = {label: apply(recipe, model, data, threads=threads, workdir=workdir) for label, recipe in
                 (("fp32", Optimum("O2")), ("dynamic", Optimum("O2", quantize="dynamic-int8")),
                  ("static", Optimum("O2", quantize="static-int8")))}
        p50s: dict[str, list[float]] = {k: [] for k in cands}
        with torch_threads(threads):
            for _ in range(rounds):
                for label, cand in cands.items():
                    p50s[label].append(_p50_ms(cand.predict, b32, budget / rounds))
        profiles = {k: op_profile.operator_times(cands[k].artifact_path, b32[:10], threads=threads)
                    for k in ("fp32", "dynamic")}
        mm = {k: float(f.loc[f["matmul"], "ms_per_pass"].sum()) for k, f in profiles.items()}
        rest = {k: float(f.loc[~f["matmul"], "ms_per_pass"].sum()) for k, f in profiles.items()}
        share = op_profile.matmul_share(profiles["fp32"])
        row: dict[str, Any] = {"width": width, "params": weights.param_count(model), "train_s": log.train_s,
                               "matmul_share": share, "matmul_int8_x": mm["fp32"] / mm["dynamic"],
                               "rest_int8_x": rest["fp32"] / rest["dynamic"],
                               "profile": op_profile.describe(profiles["fp32"])}
        rows_s = {k: 32 / (float(np.median(v)) / 1e3) for k, v in p50s.items()}
        accs = {}
        for label, cand in cands.items():
            q = evaluate(cand, data, ref)
            accs[label] = q.accuracy
            by_length = [e for e in q.slices if e["slice"] == "length" and "drop" in e]
            worst = max(by_length, key=lambda e: e["drop"]) if by_length else None
            row[f"{label}_worst"] = "-" if worst is None else f"length={worst['group']} ({100 * worst['drop']:+.1f})"
        for label in ("dynamic", "static"):
            row[f"{label}_ratio"] = rows_s[label] / rows_s["fp32"]
            row[f"{label}_drop_pts"] = 100 * (accs[label] - accs["fp32"])
        row |= {"fp32_accuracy": accs["fp32"], "fp32_rows_s": rows_s["fp32"]}
        out.append(row)
        int8 = "; ".join(f"{row[f'{k}_ratio']:.2f}x, {row[f'{k}_drop_pts']:+.2f}, {row[f'{k}_worst']}"
                         for k in ("dynamic", "static"))
        print(f"{width:>6}{row['params']:>10,}{log.train_s:>8.0f}{accs['fp32']:>9.4f}{rows_s['fp32']:>12.0f}"
              f"{share:>13.0%}{row['matmul_int8_x']:>11.2f}x  {int8}", flush=True)
        print(f"{'':>6}O2 fp32 time by operator: {row['profile']}; dynamic int8 makes the matrix products "
              f"{row['matmul_int8_x']:.2f}x faster, the rest {row['rest_int8_x']:.2f}x", flush=True)
    best = max(out, key=lambda r: max(r["dynamic_ratio"], r["static_ratio"]))
    verdict = max(best["dynamic_ratio"], best["static_ratio"])
    print(f"int8 pays most at width {best['width']}: {verdict:.2f}x over O2 fp32 at batch 32 (target >= 1.3x "
          f"{'met' if verdict >= 1.3 else 'missed'} there) [{flag_text}]. int8 speeds up the matrix products only, "
          f"and pays when they are large: on narrow layers quantizing the activations costs about what the int8 "
          f"products save (matmul int8: their own speedup, from ONNX Runtime's profile).", flush=True)
    return out


# --- serving: length-bucketed vs plain dynamic batching at the SLA ------------------------------------

class _TokenCount:
    """The candidate, counting the token positions (rows x sequence length) each model call computes."""

    def __init__(self, candidate):
        self.candidate, self.tokens, self.calls = candidate, 0, 0

    def predict(self, batch):
        self.tokens += int(batch["input_ids"].size)
        self.calls += 1
        return self.candidate.predict(batch)


def _saturated(model, policy, requests, threads: int) -> float:
    """Requests per second with every request queued at once (the server's capacity, no SLA)."""
    import threading
    import time

    from optlab.serving.server import Server

    done, left = threading.Event(), [len(requests)]

    def on_done(_reply):
        left[0] -= 1
        if not left[0]:
            done.set()
    with Server(model, policy, threads_per_worker=threads) as server:
        start = time.perf_counter()
        for i, payload in enumerate(requests):
            server.submit(payload, i, on_done=on_done)
        if not done.wait(300):
            raise RuntimeError(f"{policy.name}: {left[0]} of {len(requests)} requests unanswered after 300 s")
        return len(requests) / (time.perf_counter() - start)


def run_bucketing(smoke: bool = False, threads: int = THREADS, sla_ms: float = 250.0,
                  edges: tuple[int, ...] = (16, 32, 64, 128), max_batch: int = 8, max_wait_ms: float = 2.0,
                  rounds: int | None = None) -> dict[str, Any]:
    """The intents teacher's O2 fp32 ONNX candidate serving the dataset's requests (their request mix and
    long-tailed lengths), DynamicBatching vs BucketedBatching with the same `max_batch`, `max_wait_ms`,
    one worker and `threads` threads: token positions computed per request and capacity (every request
    queued at once; 5 interleaved rounds, medians), both beside one request per call, and throughput at
    p99 <= `sla_ms` (optlab.serving.sla; `rounds` interleaved searches). A request holds several texts,
    so `max_batch` (requests) stays small and `sla_ms` well above the largest request's own service time
    (32 texts of 128 tokens), so that the SLA figure measures batching, not that one request."""
    from optlab.data.datasets import load
    from optlab.instruments.environment import cpu_info
    from optlab.models import zoo
    from optlab.models.runtimes import quiet_torch_logs
    from optlab.recipes import Optimum
    from optlab.serving.bucketing import request_length
    from optlab.serving.policies import BucketedBatching, DynamicBatching, NoBatching
    from optlab.serving.server import Server
    from optlab.serving.sla import SlaSearch, server_probe, throughput_at_sla
    from optlab.techniques.registry import apply

    quiet_torch_logs()
    _, flags = cpu_info()
    flag_text = ",".join(f for f in SPEED_FLAGS if f in flags) or "no avx2"
    data = load("intents", smoke=smoke)
    teacher = zoo.get("intents", "teacher", smoke=smoke, data=data)
    candidate = apply(Optimum("O2"), teacher, data, threads=threads,
                      workdir=Path(tempfile.mkdtemp(prefix="optlab-bench-bucketing-")))
    requests = data.requests
    lengths = np.array([request_length(r, "attention_mask") for r in requests])
    rows = np.array([len(r["input_ids"]) for r in requests])
    policies = {"dynamic": DynamicBatching(max_batch=max_batch, max_wait_ms=max_wait_ms),
                "bucketed": BucketedBatching(max_batch=max_batch, max_wait_ms=max_wait_ms, edges=edges)}
    search = SlaSearch(max_p99_ms=sla_ms, probe_s=0.5 if smoke else 1.5, rel_tol=0.25 if smoke else 0.1,
                       start_per_s=100.0, min_per_s=10.0, max_probes=4 if smoke else 12)
    rounds = rounds or (1 if smoke else 2)
    print(f"CPU: {cpu_model()} | flags: {flag_text} | threads: {threads} per server (ONNX Runtime), 1 worker | "
          f"setting: {'smoke' if smoke else 'full'}", flush=True)
    shares = np.bincount([policies["bucketed"].bucket(n) for n in lengths], minlength=len(edges) + 1) / len(lengths)
    print(f"requests: {len(requests)} intents requests, {rows.mean():.2f} texts each, request length (its longest "
          f"text) p50 {np.percentile(lengths, 50):.0f} / p90 {np.percentile(lengths, 90):.0f} / max {lengths.max()} "
          f"tokens; buckets up to {'/'.join(map(str, edges))}/more: {', '.join(f'{v:.0%}' for v in shares)}",
          flush=True)
    out: dict[str, Any] = {"flags": flag_text, "sla_ms": sla_ms}
    reference = {"none": NoBatching(), **policies}  # one request per call: the padding a request brings itself
    counted = {}
    for name, policy in reference.items():  # what each policy makes the model compute (no timing)
        counted[name] = _TokenCount(candidate)
        _saturated(counted[name], policy, requests, threads)
    real = int(sum(int(r["attention_mask"].sum()) for r in requests))
    for name, count in counted.items():
        out[f"{name} tokens per request"] = count.tokens / len(requests)
        print(f"{reference[name].name}: {count.tokens / len(requests):.0f} token positions computed per request "
              f"({count.calls} calls; {1 - real / count.tokens:.0%} of them padding)", flush=True)
    pairs = 2 if smoke else 5
    capacity: dict[str, list[float]] = {name: [] for name in reference}
    for _ in range(pairs):  # interleaved: a shared machine's slow spells hit all alike
        for name, policy in reference.items():
            capacity[name].append(_saturated(candidate, policy, requests, threads))
    pair_ratios = np.array(capacity["bucketed"]) / np.array(capacity["dynamic"])
    for name, policy in reference.items():
        out[f"{name} capacity"] = float(np.median(capacity[name]))
        print(f"{policy.name}: capacity {out[f'{name} capacity']:.0f} requests/s (all queued at once; median of "
              f"{pairs}: {', '.join(f'{v:.0f}' for v in capacity[name])})", flush=True)
    out["capacity ratio"] = float(np.median(pair_ratios))
    print(f"capacity bucketed / dynamic: {out['capacity ratio']:.2f}x (median of {pairs} interleaved pairs, "
          f"{pair_ratios.min():.2f}-{pair_ratios.max():.2f}) [{flag_text}]", flush=True)
    found: dict[str, list] = {name: [] for name in policies}
    for round_ in range(rounds):  # interleaved: a shared machine's slow spells hit both alike
        for name, policy in policies.items():
            make = lambda policy=policy: Server(candidate, policy, threads_per_worker=threads)  # noqa: E731
            found[name].append(throughput_at_sla(server_probe(make, requests, search), search))
            print(f"  round {round_ + 1}, {name}: {found[name][-1].throughput_per_s:.0f}/s "
                  f"({len(found[name][-1].curve)} probes)", flush=True)
    for name, policy in policies.items():
        results = found[name]
        out[name] = float(np.median([r.throughput_per_s for r in results]))
        notes = "; ".join(sorted({n for r in results for n in r.notes}))
        print(f"{policy.name}: {out[name]:.0f} requests/s at p99 <= {sla_ms:g} ms (median of {rounds} rounds: "
              f"{', '.join(f'{r.throughput_per_s:.0f}/s (p99 {r.p99_ms:.0f} ms)' for r in results)})"
              f"{' - ' + notes if notes else ''}", flush=True)
    per_round = [b.throughput_per_s / d.throughput_per_s if d.throughput_per_s else float("nan")
                 for d, b in zip(found["dynamic"], found["bucketed"], strict=True)]
    out["ratio"] = float(np.median(per_round))
    print(f"bucketed / dynamic throughput at p99 <= {sla_ms:g} ms: {out['ratio']:.2f}x (median of the per-round "
          f"ratios {', '.join(f'{v:.2f}' for v in per_round)}; O2 fp32 ONNX, {threads} threads each) [{flag_text}]",
          flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlab.bench transformers", description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv or [])
    if args.widths:
        run_widths(tuple(int(w) for w in args.widths.split(",")), epochs=args.width_epochs, smoke=args.smoke,
                   threads=args.threads)
        return 0
    if args.bucketing:
        run_bucketing(smoke=args.smoke, threads=args.threads, sla_ms=args.sla_ms, max_batch=args.max_batch,
                      max_wait_ms=args.wait_ms, edges=tuple(int(e) for e in args.edges.split(",")))
        return 0
    run(smoke=args.smoke, threads=args.threads, distill=args.distill)
    return 0
