"""MLPerf LoadGen as the referee: the same server, driven by LoadGen's C++ generator.

`loadgen_run(server, requests, "Server" | "SingleStream" | "Offline", ...)` wraps the server in a
LoadGen SUT (its `issue_query` hands each sample to the server's queue and returns at once; each
answer calls `QuerySamplesComplete`) and the request payloads in a QSL, runs the scenario in
performance mode, and parses LoadGen's summary into one row with the same column names as
`loadgen.run` (p50_ms, p99_ms, achieved_per_s, ...) plus LoadGen's verdict (VALID/INVALID) and its
early-stopping estimate. A p99 of an INVALID run is no referee figure: `agreement` says so beside a
ratio, and `loadgen_headroom` measures how fast LoadGen itself can issue (a no-op SUT), so a
cross-check runs where neither generator's own delay is in the figures. LoadGen writes its log
files into `outdir` (a temporary folder by default).
"""
from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optlab.serving.loadgen import noop_server
from optlab.serving.server import ERROR, Reply, Server

SCENARIOS = ("SingleStream", "Server", "Offline")


def loadgen_run(server: Server, requests: Sequence[dict[str, np.ndarray]], scenario: str = "Server", *,
                target_qps: float | None = None, target_latency_ms: float = 10.0, min_query_count: int = 662,
                min_duration_s: float = 1.0, max_duration_s: float = 60.0, outdir: str | Path | None = None,
                seed: int = 0, coalesce: bool = False) -> dict[str, Any]:
    """Run one LoadGen scenario in performance mode against `server` (started here, stopped at the end).
    `coalesce` lets the Server scenario hand queries that are due together to one `issue_query` call
    (LoadGen's `server_coalesce_queries`): fewer calls into Python at high rates."""
    import mlperf_loadgen as lg

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown LoadGen scenario {scenario!r}; use one of {', '.join(SCENARIOS)}")
    if scenario in ("Server", "Offline") and not (target_qps and target_qps > 0):
        raise ValueError(f"the {scenario} scenario needs target_qps > 0 (the load to offer or expect)")
    if not len(requests):
        raise ValueError("loadgen_run needs at least one request payload; pass data.requests")
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_query_count = int(min_query_count)
    settings.max_query_count = 0
    settings.min_duration_ms = int(min_duration_s * 1000)
    settings.max_duration_ms = int(max_duration_s * 1000)
    settings.schedule_rng_seed = settings.sample_index_rng_seed = settings.qsl_rng_seed = int(seed) + 1
    if scenario == "Server":
        settings.server_target_qps = float(target_qps)
        settings.server_target_latency_ns = int(target_latency_ms * 1e6)
        settings.server_coalesce_queries = coalesce
    elif scenario == "Offline":
        settings.offline_expected_qps = float(target_qps)
    else:
        settings.single_stream_expected_latency_ns = int(target_latency_ms * 1e6)
    errors = [0]
    lock = threading.Lock()

    def answer(reply: Reply) -> None:
        if reply.status == ERROR:
            with lock:
                errors[0] += 1
        lg.QuerySamplesComplete([lg.QuerySampleResponse(reply.request_id, 0, 0)])

    n_payloads = len(requests)

    def issue_queries(samples) -> None:
        for sample in samples:
            server.submit(requests[sample.index % n_payloads], sample.id, on_done=answer)

    def flush_queries() -> None:
        return None

    def noop(_indices) -> None:
        return None

    with tempfile.TemporaryDirectory(prefix="optlab-loadgen-") as tmp:
        folder = Path(outdir) if outdir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        log = log_settings(lg, folder)
        server.start()
        sut = lg.ConstructSUT(issue_queries, flush_queries)
        qsl = lg.ConstructQSL(n_payloads, n_payloads, noop, noop)
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
            server.stop()
        summary = parse_summary((folder / "mlperf_log_summary.txt").read_text())
    return _row(summary, scenario, target_qps, errors[0], server)


def log_settings(lg, folder: Path):
    """LoadGen's log settings: its files into `folder`, nothing copied to stdout."""
    log = lg.LogSettings()
    log.log_output.outdir = str(folder)
    log.log_output.copy_summary_to_stdout = False
    log.log_output.copy_detail_to_stdout = False
    return log


def parse_summary(text: str) -> dict[str, str]:
    """`key : value` lines of mlperf_log_summary.txt (later keys of the same name win)."""
    pairs = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lstrip("* ").strip()
        if sep and key and value.strip():
            pairs[key] = value.strip()
    return pairs


def _ns_ms(summary: dict[str, str], key: str) -> float:
    value = summary.get(key)
    return float(value) / 1e6 if value not in (None, "") and re.fullmatch(r"[\d.eE+-]+", value) else float("nan")


def _number(summary: dict[str, str], key: str) -> float:
    value = summary.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _row(summary: dict[str, str], scenario: str, target_qps, errors: int, server: Server) -> dict[str, Any]:
    throughput_key = {"Server": "Completed samples per second", "Offline": "Samples per second",
                      "SingleStream": "QPS w/o loadgen overhead"}[scenario]
    early = next((v for k, v in summary.items() if k.lower().startswith("early stopping")
                  and "99" in k and "percentile" in k.lower()), None)
    return {
        "tool": "mlperf-loadgen", "scenario": scenario, "policy": server.policy.name, "workers": server.workers,
        "offered_per_s": float(target_qps) if target_qps else _number(summary, "QPS w/ loadgen overhead"),
        "scheduled_per_s": _number(summary, "Scheduled samples per second"),
        "achieved_per_s": _number(summary, throughput_key),
        "result": summary.get("Result is", "UNKNOWN"), "valid": summary.get("Result is") == "VALID",
        "p50_ms": _ns_ms(summary, "50.00 percentile latency (ns)"),
        "p90_ms": _ns_ms(summary, "90.00 percentile latency (ns)"),
        "p95_ms": _ns_ms(summary, "95.00 percentile latency (ns)"),
        "p99_ms": _ns_ms(summary, "99.00 percentile latency (ns)"),
        "mean_ms": _ns_ms(summary, "Mean latency (ns)"), "max_ms": _ns_ms(summary, "Max latency (ns)"),
        "early_stopping_p99_ms": float(early) / 1e6 if early and re.fullmatch(r"[\d.]+", early) else float("nan"),
        "errors": errors, "summary": summary,
    }


AGREE = (0.85, 1.15)


def agreement(ratio: float, valid_rounds: int, rounds: int) -> str:
    """One sentence on whether optlab's p99 and LoadGen's agree (median optlab / LoadGen p99 over
    LoadGen's VALID rounds, `ratio`), and the likely reason when they do not."""
    low, high = AGREE
    if valid_rounds == 0 or ratio != ratio:
        return (f"no agreement can be claimed: LoadGen judged none of {rounds} round(s) VALID, so its p99 is no "
                "referee figure here (it missed its own latency bound or query count; lower the rate or run longer)")
    counted = f"median optlab/LoadGen p99 {ratio:.3f} over {valid_rounds} VALID of {rounds} round(s)"
    if low <= ratio <= high:
        return f"optlab and LoadGen agree: {counted}, within {low:g}-{high:g}"
    if ratio > high:
        return (f"they do not agree: {counted}, optlab higher. optlab counts from each request's scheduled time, "
                "so its generator's lateness and the socket hand-off to the server are in its p99 (see "
                "send_lag_p99_ms and transport_ms in its rows); LoadGen issues in process and counts from its issue")
    return (f"they do not agree: {counted}, LoadGen higher. LoadGen's figure carries a call into Python per "
            "issue and per answer (QuerySamplesComplete) that optlab's in-process path does not; at high rates "
            "that queueing dominates the tail")


def loadgen_headroom(*, sla_ms: float = 10.0, start_per_s: float = 500.0, max_per_s: float = 128_000,
                     probe_s: float = 1.0, min_queries: int = 662, failures_to_stop: int = 2,
                     seed: int = 0) -> tuple[float, pd.DataFrame]:
    """LoadGen's own headroom: the highest Server-scenario rate at which a no-op SUT's p99 stays
    <= 10% of `sla_ms` and LoadGen calls the run VALID (rates doubling from `start_per_s`, going on
    past a failure until `failures_to_stop` fail in a row, as `loadgen.generator_headroom` does)."""
    payloads = [{"x": np.zeros((1, 1), np.float32)}]
    rows, best, failed, rate = [], 0.0, 0, start_per_s
    while rate <= max_per_s and failed < failures_to_stop:
        queries = int(max(min_queries, rate * probe_s))
        row = loadgen_run(noop_server(), payloads, "Server", target_qps=rate, target_latency_ms=sla_ms,
                          min_query_count=queries, min_duration_s=probe_s, coalesce=True, seed=seed)
        passed = bool(row["valid"] and row["p99_ms"] <= 0.1 * sla_ms)
        rows.append({k: v for k, v in row.items() if k != "summary"} | {"passed": passed})
        best, failed = (rate, 0) if passed else (best, failed + 1)
        rate *= 2
    return best, pd.DataFrame(rows)
