"""`python -m optlab.bench transformers --bucketing`: the O2 fp32 ONNX candidate serving the intents
requests (their real, long-tailed lengths), plain dynamic vs length-bucketed batching with the same
batch limit, wait and threads: token positions computed per request, capacity, throughput at the SLA."""
from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optlab.bench.intents import COMMAND, THREADS
from optlab.bench.render import Renderer, target
from optlab.data.datasets import load
from optlab.models import zoo
from optlab.models.runtimes import quiet_torch_logs
from optlab.recipes import Optimum
from optlab.serving.bucketing import request_length
from optlab.serving.policies import BucketedBatching, DynamicBatching, NoBatching
from optlab.serving.server import Server
from optlab.serving.sla import SlaSearch, server_probe, throughput_at_sla
from optlab.techniques.registry import apply


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


def _tokens(candidate, reference: dict, requests, threads: int) -> pd.DataFrame:
    """What each policy makes the model compute (no timing): token positions per request, calls, padding."""
    real = int(sum(int(r["attention_mask"].sum()) for r in requests))
    rows = []
    for name, policy in reference.items():
        count = _TokenCount(candidate)
        _saturated(count, policy, requests, threads)
        rows.append({"policy": name, "policy_name": policy.name, "tokens_per_request": count.tokens / len(requests),
                     "calls": count.calls, "padding_share": 1 - real / count.tokens})
    return pd.DataFrame(rows)


def _capacity(candidate, reference: dict, requests, threads: int, pairs: int) -> pd.DataFrame:
    """Capacity (every request queued at once) per policy, in interleaved rounds: a shared machine's
    slow spells hit all alike."""
    rows = []
    for round_ in range(pairs):
        for name, policy in reference.items():
            rows.append({"policy": name, "policy_name": policy.name, "round": round_,
                         "requests_per_s": _saturated(candidate, policy, requests, threads)})
    return pd.DataFrame(rows)


def _at_sla(candidate, policies: dict, requests, search: SlaSearch, threads: int, rounds: int,
            progress: Callable[[str], None]) -> pd.DataFrame:
    """Throughput at the SLA per policy, `rounds` interleaved searches."""
    rows = []
    for round_ in range(rounds):
        for name, policy in policies.items():
            make = lambda policy=policy: Server(candidate, policy, threads_per_worker=threads)  # noqa: E731
            found = throughput_at_sla(server_probe(make, requests, search), search)
            rows.append({"policy": name, "policy_name": policy.name, "round": round_,
                         "throughput_per_s": found.throughput_per_s, "p99_ms": found.p99_ms,
                         "probes": len(found.curve), "notes": "; ".join(sorted(found.notes))})
            progress(f"  round {round_ + 1}, {name}: {found.throughput_per_s:.0f}/s ({len(found.curve)} probes)")
    return pd.DataFrame(rows)


def run_bucketing(smoke: bool = False, threads: int = THREADS, sla_ms: float = 250.0,
                  edges: tuple[int, ...] = (16, 32, 64, 128), max_batch: int = 8, max_wait_ms: float = 2.0,
                  rounds: int | None = None, progress: Callable[[str], None] = lambda _line: None) -> dict[str, Any]:
    """The intents teacher's O2 fp32 ONNX candidate serving the dataset's requests (their request mix and
    long-tailed lengths), DynamicBatching vs BucketedBatching with the same `max_batch`, `max_wait_ms`,
    one worker and `threads` threads: token positions computed per request and capacity (every request
    queued at once; 5 interleaved rounds, medians), both beside one request per call, and throughput at
    p99 <= `sla_ms` (optlab.serving.sla; `rounds` interleaved searches). A request holds several texts,
    so `max_batch` (requests) stays small and `sla_ms` well above the largest request's own service time
    (32 texts of 128 tokens), so that the SLA figure measures batching, not that one request."""
    data = load("intents", smoke=smoke)
    teacher = zoo.get("intents", "teacher", smoke=smoke, data=data)
    with quiet_torch_logs():
        candidate = apply(Optimum("O2"), teacher, data, threads=threads,
                          workdir=Path(tempfile.mkdtemp(prefix="optlab-bench-bucketing-")))
    requests = data.requests
    lengths = np.array([request_length(r, "attention_mask") for r in requests])
    policies = {"dynamic": DynamicBatching(max_batch=max_batch, max_wait_ms=max_wait_ms),
                "bucketed": BucketedBatching(max_batch=max_batch, max_wait_ms=max_wait_ms, edges=edges)}
    search = SlaSearch(max_p99_ms=sla_ms, probe_s=0.5 if smoke else 1.5, rel_tol=0.25 if smoke else 0.1,
                       start_per_s=100.0, min_per_s=10.0, max_probes=4 if smoke else 12)
    reference = {"none": NoBatching(), **policies}  # one request per call: the padding a request brings itself
    buckets = np.bincount([policies["bucketed"].bucket(n) for n in lengths], minlength=len(edges) + 1)
    return {"sla_ms": sla_ms, "edges": edges, "threads": threads, "requests": len(requests),
            "texts_per_request": float(np.mean([len(r["input_ids"]) for r in requests])),
            "length_p50": float(np.percentile(lengths, 50)), "length_p90": float(np.percentile(lengths, 90)),
            "length_max": int(lengths.max()), "bucket_shares": list(buckets / len(lengths)),
            "tokens": _tokens(candidate, reference, requests, threads),
            "capacity": _capacity(candidate, reference, requests, threads, 2 if smoke else 5),
            "sla": _at_sla(candidate, policies, requests, search, threads, rounds or (1 if smoke else 2), progress)}


def _capacity_lines(capacity: pd.DataFrame) -> tuple[list[str], float, np.ndarray]:
    lines = []
    for _name, group in capacity.groupby("policy", sort=False):
        values = group["requests_per_s"].to_numpy()
        lines.append(f"{group['policy_name'].iloc[0]}: capacity {np.median(values):.0f} requests/s (all queued at "
                     f"once; median of {len(values)}: {', '.join(f'{v:.0f}' for v in values)})")
    by = {name: g["requests_per_s"].to_numpy() for name, g in capacity.groupby("policy", sort=False)}
    pair_ratios = by["bucketed"] / by["dynamic"]
    return lines, float(np.median(pair_ratios)), pair_ratios


def show_bucketing(out: Renderer, result: dict[str, Any], flag_text: str) -> None:
    """The serving figures for a reader: requests, tokens, capacity, throughput at the SLA, and the ratio."""
    sla_ms = result["sla_ms"]
    out.say(f"requests: {result['requests']} intents requests, {result['texts_per_request']:.2f} texts each, request "
            f"length (its longest text) p50 {result['length_p50']:.0f} / p90 {result['length_p90']:.0f} / max "
            f"{result['length_max']} tokens; buckets up to {'/'.join(map(str, result['edges']))}/more: "
            f"{', '.join(f'{v:.0%}' for v in result['bucket_shares'])}")
    for r in result["tokens"].to_dict(orient="records"):
        out.say(f"{r['policy_name']}: {r['tokens_per_request']:.0f} token positions computed per request "
                f"({r['calls']} calls; {r['padding_share']:.0%} of them padding)")
    lines, ratio, pair_ratios = _capacity_lines(result["capacity"])
    for line in lines:
        out.say(line)
    out.say(f"capacity bucketed / dynamic: {ratio:.2f}x (median of {len(pair_ratios)} interleaved pairs, "
            f"{pair_ratios.min():.2f}-{pair_ratios.max():.2f}) [{flag_text}]")
    sla = result["sla"]
    for _name, group in sla.groupby("policy", sort=False):
        notes = "; ".join(sorted({n for text in group["notes"] for n in text.split("; ") if n}))
        out.say(f"{group['policy_name'].iloc[0]}: {group['throughput_per_s'].median():.0f} requests/s at p99 <= "
                f"{sla_ms:g} ms (median of {len(group)} rounds: " + ", ".join(
                    f"{r.throughput_per_s:.0f}/s (p99 {r.p99_ms:.0f} ms)" for r in group.itertuples())
                + f"){' - ' + notes if notes else ''}")
    for name in ("tokens", "capacity", "sla"):
        out.keep(name, result[name])
    dynamic = sla[sla["policy"] == "dynamic"]["throughput_per_s"].to_numpy()
    bucketed = sla[sla["policy"] == "bucketed"]["throughput_per_s"].to_numpy()
    per_round = [b / d for d, b in zip(dynamic, bucketed, strict=True) if d]
    shown = f"{np.median(per_round):.2f}x" if per_round else "not available (dynamic met the SLA at no rate)"
    out.targets([target(f"bucketed / dynamic throughput at p99 <= {sla_ms:g} ms",
                        float(np.median(per_round)) if per_round else None, None, COMMAND + " --bucketing",
                        f"bucketed / dynamic throughput at p99 <= {sla_ms:g} ms: {shown} (median of the per-round "
                        f"ratios {', '.join(f'{v:.2f}' for v in per_round)}; O2 fp32 ONNX, {result['threads']} "
                        f"threads each) [{flag_text}]")])
