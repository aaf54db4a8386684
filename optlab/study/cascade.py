"""A cascade's threshold sweep: per threshold, quality on the test split with its interval, the share
escalated, mean/p50/p99 latency per request and cost per 1M requests, beside both models alone.

    sweep = threshold_sweep(candidate, data)      # candidate: optlab.techniques.apply(Cascade(...), ...)
    sweep.table                                   # one tidy row per threshold (+ "cheap alone", "expensive alone")
    sweep.samples                                 # every timed request: model, threshold, latency_ms (for an ECDF)
    score_agreement(cheap_val, expensive_val)     # a click model's: do the two rank alike, on one scale?

The thresholds come from the validation split (the confidences at which a share of its rows would go
on), never from the test split, plus the one the cascade chose. Requests are single rows, timed
interleaved with both models alone (`optlab.instruments.interleaved`), cycling through distinct test
rows placed so that the share escalated while timing equals the test split's at that threshold
(`timed_escalated_share` says what it was).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optlab.data.datasets import trim_padding
from optlab.instruments import metrics
from optlab.instruments.interleaved import time_interleaved
from optlab.instruments.latency import torch_threads
from optlab.instruments.quality import PRIMARY_METRIC, metric_ci, paired_drop_ci, predict_split
from optlab.models.cascade import CascadeCandidate, Router, confidence, escalated
from optlab.study import costs
from optlab.study.table import Pricing

VALIDATION_SHARES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)  # escalated shares of the validation split swept
CHEAP, EXPENSIVE, CASCADE = "cheap alone", "expensive alone", "cascade"


@dataclass(frozen=True)
class CascadeSweep:
    """The sweep's table (one row per threshold and per model alone) and its raw request latencies."""

    table: pd.DataFrame
    samples: pd.DataFrame  # model, threshold, latency_ms: one row per timed request
    metric: str
    chosen_threshold: float


def sweep_thresholds(router: Router, cheap_validation: np.ndarray, shares: Sequence[float] = VALIDATION_SHARES):
    """The thresholds at which `shares` of the validation rows would go on, and the router's own; sorted."""
    conf = np.sort(confidence(cheap_validation, router.confidence, router.decision))
    found = {float(router.threshold)}
    for share in shares:
        if not 0 <= share <= 1:
            raise ValueError(f"shares={list(shares)!r}: each escalated share must be in [0, 1], e.g. 0.1")
        k = int(round(share * len(conf)))
        found.add(0.0 if k == 0 else 1.0 if k >= len(conf) else float(conf[k]))
    return sorted(found)


def score_agreement(cheap: np.ndarray, expensive: np.ndarray) -> dict[str, float]:
    """How alike two click models' scores are on the same rows (pass the validation split's): their
    Spearman rank correlation, and the least-squares line expensive_logit ~ slope * cheap_logit +
    intercept. A cascade of a ranking metric (AUC) ranks kept rows by the cheap model and sent rows by
    the expensive one, so it needs both: a slope near 1 and an intercept near 0 say the scores share a
    scale (a linear calibration would change nothing), and only a rank correlation near 1 lets the cheap
    model keep most rows without costing AUC."""
    x = np.asarray(cheap, dtype=np.float64).reshape(-1)
    y = np.asarray(expensive, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError(f"score_agreement needs one click logit per row from each model on the same rows (>= 3, "
                         f"not all equal); got {x.size} and {y.size}")
    rank_x, rank_y = (pd.Series(v).rank().to_numpy() for v in (x, y))
    slope, intercept = np.polyfit(x, y, 1)
    return {"spearman": float(np.corrcoef(rank_x, rank_y)[0, 1]), "scale_slope": float(slope),
            "scale_intercept": float(intercept)}


def spread_rows(mask: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` distinct row indices (fewer if the split is smaller) with round(share * n) escalated ones, in an
    order where every stretch of calls sends about that share on (escalated rows evenly spaced)."""
    rng = np.random.default_rng(seed)
    n = min(n, mask.shape[0])
    on, off = np.flatnonzero(mask), np.flatnonzero(~mask)
    k = int(round(mask.mean() * n)) if mask.shape[0] else 0
    k = min(max(k, n - off.shape[0]), on.shape[0])
    picked_on, picked_off = rng.permutation(on)[:k], rng.permutation(off)[:n - k]
    slots = np.floor((np.arange(n) + 1) * k / n) > np.floor(np.arange(n) * k / n)
    order = np.empty(n, dtype=np.int64)
    order[slots], order[~slots] = picked_on, picked_off
    return order


def _rows(split, index: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [trim_padding({name: value[i:i + 1] for name, value in split.inputs.items()}) for i in index]


def _quality(metric, labels, logits, reference, task, n_boot) -> dict[str, float]:
    low, high = metric_ci(metric, labels, logits, task, n_boot=n_boot)
    drop_low, drop_high = paired_drop_ci(metric, labels, logits, reference, task, n_boot=n_boot)
    quality = metrics.score(metric, labels, logits, task)
    return {"quality": quality, "quality_ci_low": low, "quality_ci_high": high,
            "quality_drop": metrics.worse_by(metric, metrics.score(metric, labels, reference, task), quality),
            "quality_drop_ci_low": drop_low, "quality_drop_ci_high": drop_high}


def _latency(samples_ns: np.ndarray, pricing: Pricing) -> dict[str, float]:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    throughput = 1e3 / mean  # one request per call, served one after another
    price = pricing.price.price_per_hour_usd
    cost = costs.estimate(price, throughput, utilisation=pricing.utilisation).cost_per_1m_usd
    return {"mean_ms": mean, "p50_ms": float(np.quantile(ms, 0.5)), "p99_ms": float(np.quantile(ms, 0.99)),
            "timed_requests": int(ms.shape[0]), "throughput_per_s": throughput, "cost_per_1m_usd": cost}


def _check(candidate: Any, timed_rows: int, rounds: int, turn_s: float) -> None:
    if not isinstance(candidate, CascadeCandidate) or candidate.parts is None:
        raise ValueError(f"threshold_sweep needs a cascade candidate (optlab.techniques.apply(Cascade(...), model, "
                         f"data)); got {type(candidate).__name__}")
    if isinstance(timed_rows, bool) or not isinstance(timed_rows, int) or timed_rows < 10:
        raise ValueError(f"timed_rows={timed_rows!r} must be an integer >= 10 (distinct test rows timed); try 256")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 2 or not turn_s > 0:
        raise ValueError(f"rounds={rounds!r} must be an integer >= 2 and turn_s={turn_s!r} > 0; try rounds=6, "
                         f"turn_s=0.05")


def threshold_sweep(candidate: CascadeCandidate, data: Any, *, thresholds: Sequence[float] | None = None,
                    timed_rows: int = 256, rounds: int = 6, turn_s: float = 0.05, n_boot: int = 1000,
                    pricing: Pricing | None = None, threads: int | None = 1, seed: int = 0) -> CascadeSweep:
    """The cascade at each threshold (default: `sweep_thresholds` from the validation split) and both
    models alone, on the test split: quality with its 95% interval and its drop against the expensive
    model alone (paired interval), the share escalated, and the latency and cost of single-row requests
    (torch timed on `threads` intra-op threads; ONNX Runtime parts keep the threads they were built for)."""
    _check(candidate, timed_rows, rounds, turn_s)
    pricing = (pricing or Pricing()).for_device(candidate.device)
    router, (cheap, expensive) = candidate.predict_fn, candidate.parts
    if thresholds is None:
        thresholds = sweep_thresholds(router, predict_split(cheap, data.validation))
    thresholds = [float(t) for t in thresholds]
    if not thresholds or any(not 0 <= t <= 1 for t in thresholds):
        raise ValueError(f"thresholds={thresholds!r} must be confidences in [0, 1], e.g. [0.5, 0.9, 0.99]")
    test, task = data.test, data.task
    metric, labels = PRIMARY_METRIC[task], np.asarray(test.labels)
    cheap_out, expensive_out = predict_split(cheap, test), predict_split(expensive, test)
    conf = confidence(cheap_out, router.confidence, router.decision)
    configs: dict[str, tuple[Any, np.ndarray, dict[str, Any]]] = {}
    everything = np.ones(len(test), dtype=bool)
    for name, fn, mask, share, logits in ((CHEAP, cheap.predict, ~everything, 0.0, cheap_out),
                                          (EXPENSIVE, expensive.predict, everything, 1.0, expensive_out)):
        configs[name] = (fn, mask, {"model": name, "threshold": None, "escalated_share": share, "logits": logits})
    for threshold in thresholds:
        mask = escalated(conf, threshold)
        merged = np.array(cheap_out, dtype=np.float64, copy=True)
        merged[mask] = expensive_out[mask]
        fn = Router(cheap.predict, expensive.predict, router.confidence, threshold, router.decision)
        configs[f"{CASCADE} @ {threshold:.6g}"] = (fn, mask, {"model": CASCADE, "threshold": threshold,
                                                              "escalated_share": float(mask.mean()), "logits": merged})
    with torch_threads(threads):
        return _time_and_table(configs, test, task, metric, labels, expensive_out, pricing, router.threshold,
                               timed_rows=timed_rows, rounds=rounds, turn_s=turn_s, n_boot=n_boot, seed=seed)


def _time_and_table(configs, test, task, metric, labels, expensive_out, pricing, chosen, *, timed_rows, rounds,
                    turn_s, n_boot, seed) -> CascadeSweep:
    rows = {name: spread_rows(mask, timed_rows, seed) for name, (_, mask, _) in configs.items()}
    requests = {name: _rows(test, index) for name, index in rows.items()}
    fns = {name: (lambda j, fn=fn, batch=requests[name]: fn(batch[j])) for name, (fn, _, _) in configs.items()}
    run = time_interleaved(fns, list(range(min(timed_rows, len(test)))), rounds=rounds, turn_s=turn_s)
    records, samples = [], []
    for name, (_, mask, info) in configs.items():
        info = dict(info)
        ns = np.concatenate(run.samples_ns[name])
        # each turn starts at the row where the last one stopped: rebuild which rows were timed
        starts = np.cumsum([0, *map(len, run.samples_ns[name])])[:-1]
        timed = np.concatenate([(start + np.arange(len(s))) % len(rows[name])
                                for start, s in zip(starts, run.samples_ns[name], strict=True)])
        logits = info.pop("logits")
        record = {**info, "timed_escalated_share": float(mask[rows[name][timed]].mean()), "metric": metric,
                  **_quality(metric, labels, logits, expensive_out, task, n_boot), **_latency(ns, pricing),
                  "chosen": info["threshold"] is not None and info["threshold"] == chosen}
        records.append(record)
        samples.append(pd.DataFrame({"model": name if info["model"] != CASCADE else CASCADE,
                                     "threshold": info["threshold"], "latency_ms": ns / 1e6}))
    table = pd.DataFrame.from_records(records)
    return CascadeSweep(table, pd.concat(samples, ignore_index=True), metric, float(chosen))
