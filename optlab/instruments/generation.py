"""Generation metrics from per-request records: what a client of a language-model server sees.

A generation request is not answered once: its tokens arrive one after another. The figures are
the ones `vllm bench serve` and guidellm print, so a reader recognises them:

- TTFT (time to first token): first token's time - the request's *scheduled* arrival (so a queue
  or a late driver shows, as for the batch load generator);
- TPOT (time per output token, per request): (e2e - ttft) / (output_tokens - 1); undefined for a
  one-token answer (left out, never shown as 0);
- ITL (inter-token latency): every gap between two consecutive tokens of one request, pooled;
- E2E latency: last token's time - scheduled arrival;
- output tokens/s: per request (output_tokens / e2e) and aggregate (all output tokens / the span
  from the first arrival to the last token).

Each latency gets p50/p90/p99 with 95% bootstrap intervals (`timing.bootstrap_quantile_ci`, the
instruments' one bootstrap) and a `noisy` flag. `goodput_per_s` counts, as vLLM's `--goodput`
does, requests that met every per-request limit per second of the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from optlab.instruments.timing import bootstrap_quantile_ci

METRICS = ("ttft", "tpot", "itl", "e2e")
QUANTILES = (0.5, 0.9, 0.99)
MIN_P99_SAMPLES = 100  # below it a p99 is the maximum of a handful: flagged noisy


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it: when it was scheduled to arrive, when each of its output
    tokens came back (monotonic nanoseconds) and its prompt length."""

    request_id: str
    scheduled_ns: int
    token_ns: tuple[int, ...]
    prompt_tokens: int
    max_new_tokens: int | None = None

    @property
    def output_tokens(self) -> int:
        return len(self.token_ns)

    @property
    def completed(self) -> bool:
        """Every token asked for came back (a request with no limit counts once it has any token)."""
        if self.max_new_tokens is None:
            return bool(self.token_ns)
        return self.output_tokens >= self.max_new_tokens


@dataclass(frozen=True)
class Sla:
    """Per-request limits on both figures a user feels: the wait for the first token and the pace after."""

    ttft_ms: float = 500.0
    tpot_ms: float = 50.0

    def __post_init__(self):
        for name in ("ttft_ms", "tpot_ms"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"Sla.{name} must be a positive number of milliseconds, got {value!r}")

    def describe(self) -> str:
        return f"TTFT p99 <= {self.ttft_ms:g} ms and TPOT p99 <= {self.tpot_ms:g} ms"


def request_frame(records: Iterable[RequestRecord]) -> pd.DataFrame:
    """One row per request: ttft_ms, tpot_ms (NaN for fewer than two tokens: undefined), e2e_ms,
    output_tokens_per_s, token counts and whether it completed."""
    rows = []
    for r in records:
        row: dict[str, Any] = {"request_id": r.request_id, "scheduled_ns": r.scheduled_ns,
                               "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
                               "completed": r.completed, "ttft_ms": np.nan, "tpot_ms": np.nan, "e2e_ms": np.nan,
                               "output_tokens_per_s": np.nan}
        if r.token_ns:
            ttft = (r.token_ns[0] - r.scheduled_ns) / 1e6
            e2e = (r.token_ns[-1] - r.scheduled_ns) / 1e6
            row.update(ttft_ms=ttft, e2e_ms=e2e)
            if r.output_tokens > 1:
                row["tpot_ms"] = (e2e - ttft) / (r.output_tokens - 1)
            if e2e > 0:
                row["output_tokens_per_s"] = r.output_tokens / (e2e / 1e3)
        rows.append(row)
    columns = ["request_id", "scheduled_ns", "prompt_tokens", "output_tokens", "completed", "ttft_ms", "tpot_ms",
               "e2e_ms", "output_tokens_per_s"]
    return pd.DataFrame(rows, columns=columns)


def inter_token_ms(records: Iterable[RequestRecord]) -> np.ndarray:
    """Every gap between consecutive tokens of one request, in ms, pooled over requests."""
    gaps = [np.diff(np.asarray(r.token_ns, dtype=np.float64)) / 1e6 for r in records if r.output_tokens > 1]
    return np.concatenate(gaps) if gaps else np.zeros(0)


def quantile_figures(name: str, values: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                     rel_ci: float = 0.10) -> dict[str, Any]:
    """`{name}_p50_ms`, `_p90_ms`, `_p99_ms`, `_mean_ms`, their 95% bootstrap intervals
    (`{name}_p99_ci_low_ms` ...) and `{name}_noisy`; None for each figure when there are no samples."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    keys = [f"{name}_p{round(q * 100)}" for q in QUANTILES]
    out: dict[str, Any] = {f"{name}_samples": int(values.size)}
    if values.size == 0:
        for key in keys:
            out.update({f"{key}_ms": None, f"{key}_ci_low_ms": None, f"{key}_ci_high_ms": None})
        out.update({f"{name}_mean_ms": None, f"{name}_noisy": True})
        return out
    estimates = np.quantile(values, QUANTILES)
    intervals = bootstrap_quantile_ci(values, QUANTILES, n_boot=n_boot, seed=seed)
    for key, estimate, (low, high) in zip(keys, estimates, intervals, strict=True):
        out.update({f"{key}_ms": float(estimate), f"{key}_ci_low_ms": float(low), f"{key}_ci_high_ms": float(high)})
    p99, (low, high) = estimates[-1], intervals[-1]
    out[f"{name}_mean_ms"] = float(values.mean())
    out[f"{name}_noisy"] = bool(values.size < MIN_P99_SAMPLES or (high - low) > rel_ci * max(p99, 1e-9))
    return out


def misses_for_certain(n: int, quantile: float = 0.99) -> int:
    """How many of `n` values over a limit put their `quantile` (np.quantile's linear rule, as every figure
    here is computed) over it whatever the others are: the values from the one at floor(q (n - 1)) up.
    A run that has seen this many requests miss a limit has missed its p99 for certain, so it can stop."""
    if n < 1:
        raise ValueError(f"misses_for_certain needs n >= 1 values, got {n}")
    return n - math.floor(quantile * (n - 1))


@dataclass(frozen=True)
class CertainMiss:
    """When a run has missed `sla` at p99 for certain, so it can stop: `misses` requests (`misses_for_certain`
    of its request count) over the TTFT limit, or as many over the TPOT limit. A request is over the TTFT
    limit once it has waited longer than that for its first token; over the TPOT limit once the time since its
    first token exceeds the limit times (tokens asked - 1), since its last token comes then or later."""

    sla: Sla
    misses: int

    @classmethod
    def of(cls, sla: Sla, requests: int) -> CertainMiss:
        return cls(sla, misses_for_certain(requests))

    def ttft_over(self, waited_ns: int) -> bool:
        return waited_ns > self.sla.ttft_ms * 1e6

    def tpot_over(self, since_first_ns: int, asked: int) -> bool:
        return asked > 1 and since_first_ns > self.sla.tpot_ms * 1e6 * (asked - 1)

    def reason(self, ttft_over: int, tpot_over: int) -> str:
        """Why the run stops ("" while it need not): which limit enough requests are over."""
        if ttft_over >= self.misses:
            return (f"stopped early: {ttft_over} requests waited more than {self.sla.ttft_ms:g} ms for their first "
                    "token, enough to put TTFT p99 over that limit whatever the others do")
        if tpot_over >= self.misses:
            return (f"stopped early: {tpot_over} requests are over TPOT {self.sla.tpot_ms:g} ms whatever their "
                    "remaining tokens take, enough to put TPOT p99 over that limit")
        return ""


def meets(frame: pd.DataFrame, sla: Sla) -> pd.Series:
    """Per request: completed, TTFT within the limit and TPOT within it (a one-token answer has no TPOT
    to miss)."""
    tpot_ok = frame["tpot_ms"].isna() | (frame["tpot_ms"] <= sla.tpot_ms)
    return frame["completed"] & (frame["ttft_ms"] <= sla.ttft_ms) & tpot_ok


def summarize(records: Sequence[RequestRecord], *, sla: Sla | None = None, n_boot: int = 1000, seed: int = 0,
              kv_cache: dict[str, float] | None = None) -> dict[str, Any]:
    """One flat row of generation figures for a run (see the module's docstring): per-metric
    percentiles with intervals, throughput, goodput at `sla` when given, and the engine's KV-cache
    figures (`kv_cache_reserved_mb`, `kv_cache_used_mb`) when passed."""
    frame = request_frame(records)
    row: dict[str, Any] = {"requests": len(frame), "completed": int(frame["completed"].sum()),
                           "prompt_tokens": int(frame["prompt_tokens"].sum()),
                           "output_tokens": int(frame["output_tokens"].sum())}
    samples = {"ttft": frame["ttft_ms"].to_numpy(), "tpot": frame["tpot_ms"].to_numpy(),
               "itl": inter_token_ms(records), "e2e": frame["e2e_ms"].to_numpy()}
    for name in METRICS:
        row.update(quantile_figures(name, samples[name], n_boot=n_boot, seed=seed))
    span_s = _span_s(records)
    row["duration_s"] = span_s
    row["output_tokens_per_s"] = row["output_tokens"] / span_s if span_s else None
    row["request_throughput_per_s"] = row["completed"] / span_s if span_s else None
    per_request = frame["output_tokens_per_s"].dropna()
    row["output_tokens_per_s_per_request_p50"] = float(per_request.median()) if len(per_request) else None
    if sla is not None:
        good = int(meets(frame, sla).sum())
        row.update(sla_ttft_ms=sla.ttft_ms, sla_tpot_ms=sla.tpot_ms, good_requests=good,
                   goodput_per_s=good / span_s if span_s else None)
    row.update({"kv_cache_reserved_mb": None, "kv_cache_used_mb": None, **(kv_cache or {})})
    return row


def _span_s(records: Sequence[RequestRecord]) -> float | None:
    """From the first scheduled arrival to the last token, in seconds (None when no token came)."""
    last = [r.token_ns[-1] for r in records if r.token_ns]
    if not last:
        return None
    span = (max(last) - min(r.scheduled_ns for r in records)) / 1e9
    return span if span > 0 else None
