"""MLPerf LoadGen's token-latency mode as the referee of the generation server's TTFT and TPOT.

LoadGen (the Server scenario with `use_token_latencies`) issues queries on its own C++ schedule;
the SUT here hands each query to an engine loop running in one thread (the same `Engine` calls the
`GenerationServer` makes: `add` on arrival, `step` while work remains), reports the first token
with `FirstTokenComplete` and the last with `QuerySamplesComplete(..., n_tokens)`. LoadGen then
times TTFT from its issue and TPOT as (latency - TTFT) / (tokens - 1), the definitions optlab's
instruments use, so the two can be compared figure by figure at one offered rate.

`referee_rounds` gives both drivers the same arrivals: each round LoadGen runs first on its own
Poisson schedule, recording when it issued each query and which sample; then optlab's load generator
process replays exactly those send times and samples into a fresh engine behind
`generation.service.GenerationService` (a continuous batcher's time per token grows with the number
of sequences in flight, so two different schedules at one rate need not agree on TPOT). Per round:
the ratios optlab / LoadGen of TTFT and TPOT p50 and p99 beside LoadGen's verdict. LoadGen judges a run
VALID only when its early-stopping test passes, which for a p99 takes several hundred queries; a
short trace is INVALID by that rule and its p99 is no referee figure (`agreement` says so), while
the p50s still compare.
"""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from optlab.generation.service import drive
from optlab.generation.trace import TraceRequest
from optlab.instruments.generation import Sla
from optlab.serving.referee import AGREE, log_settings, parse_summary

DEFAULT_SLA = Sla()  # TTFT p99 <= 500 ms, TPOT p99 <= 50 ms
_FIGURES = {  # optlab's summary key -> LoadGen's summary line
    "ttft_p50_ms": "50.00 percentile first token latency (ns)",
    "ttft_p99_ms": "99.00 percentile first token latency (ns)",
    "tpot_p50_ms": "50.00 percentile time to output token (ns)",
    "tpot_p99_ms": "99.00 percentile time to output token (ns)",
}


def _ns_to_ms(summary: dict[str, str], key: str) -> float | None:
    try:
        return float(summary[key]) / 1e6
    except (KeyError, ValueError):
        return None


def loadgen_generation_run(engine: Any, trace: Sequence[TraceRequest], *, target_qps: float, sla: Sla = DEFAULT_SLA,
                           min_query_count: int | None = None, min_duration_s: float = 1.0,
                           max_duration_s: float = 300.0, seed: int = 0,
                           outdir: str | Path | None = None) -> dict[str, Any]:
    """One LoadGen Server-scenario run in token-latency mode against `engine` at `target_qps`.
    The QSL's samples are `trace`'s prompts and output lengths; `min_query_count` defaults to the
    trace's length. Returns TTFT/TPOT p50/p90/p99 (ms), throughput, LoadGen's verdict and why, and
    `arrivals`: when LoadGen issued each query (s from the first) and the sample it asked for."""
    import mlperf_loadgen as lg  # lazy: a compiled dependency the instruments need only here

    if not len(trace):
        raise ValueError("loadgen_generation_run needs at least one request; build a trace with generation.trace")
    if not target_qps > 0:
        raise ValueError(f"target_qps must be > 0 requests per second, got {target_qps!r}")
    settings = _settings(lg, target_qps, sla, int(min_query_count or len(trace)), min_duration_s, max_duration_s,
                         seed)
    inbox: deque[tuple[int, int]] = deque()  # (LoadGen's sample id, QSL index), filled by issue_queries
    wake = threading.Event()
    stop = threading.Event()
    failure: list[BaseException] = []

    issued: list[tuple[int, int]] = []  # (monotonic ns, QSL index) per query, in issue order

    def issue_queries(samples) -> None:
        now = time.monotonic_ns()
        for sample in samples:
            inbox.append((sample.id, sample.index))
            issued.append((now, sample.index))
        wake.set()

    def loop() -> None:
        counts: dict[str, int] = {}
        ids: dict[str, int] = {}
        try:
            while not stop.is_set():
                while inbox:
                    sample_id, index = inbox.popleft()
                    request = trace[index % len(trace)]
                    key = str(sample_id)
                    ids[key], counts[key] = sample_id, 0
                    engine.add(key, list(request.prompt_ids), request.max_new_tokens)
                if not engine.has_work():
                    wake.wait(0.01)
                    wake.clear()
                    continue
                for event in engine.step():
                    counts[event.request_id] += 1
                    sample_id = ids[event.request_id]
                    if counts[event.request_id] == 1:
                        lg.FirstTokenComplete([lg.QuerySampleResponse(sample_id, 0, 0, 1)])
                    if event.finished:
                        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0, counts[event.request_id])])
        except BaseException as error:  # noqa: BLE001 - re-raised on the caller's thread
            failure.append(error)

    def noop(_indices) -> None:
        return None

    worker = threading.Thread(target=loop, name="optlab-loadgen-engine", daemon=True)
    with tempfile.TemporaryDirectory(prefix="optlab-loadgen-tokens-") as tmp:
        folder = Path(outdir) if outdir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        log = log_settings(lg, folder)
        sut = lg.ConstructSUT(issue_queries, lambda: None)
        qsl = lg.ConstructQSL(len(trace), len(trace), noop, noop)
        worker.start()
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
        finally:
            stop.set()
            wake.set()
            worker.join(timeout=30)
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        if failure:
            raise failure[0]
        summary = parse_summary((folder / "mlperf_log_summary.txt").read_text())
    return {**_row(summary, target_qps), "arrivals": _arrivals(issued)}


def _arrivals(issued: list[tuple[int, int]]) -> tuple[list[float], list[int]]:
    """LoadGen's issue times (s from the first) and sample indices, for a replay."""
    start = issued[0][0] if issued else 0
    return [(t - start) / 1e9 for t, _ in issued], [index for _, index in issued]


def _row(summary: dict[str, str], target_qps: float) -> dict[str, Any]:
    row: dict[str, Any] = {name: _ns_to_ms(summary, key) for name, key in _FIGURES.items()}
    row.update({
        "tool": "mlperf-loadgen (token latencies)", "offered_per_s": float(target_qps),
        "achieved_per_s": _float(summary.get("Completed samples per second")),
        "output_tokens_per_s": _float(summary.get("Completed tokens per second")),
        "result": summary.get("Result is", "UNKNOWN"), "valid": summary.get("Result is") == "VALID",
        "why_invalid": _why_invalid(summary),
    })
    return row


def _settings(lg, target_qps: float, sla: Sla, queries: int, min_duration_s: float, max_duration_s: float,
              seed: int):
    """LoadGen's Server scenario in token-latency mode: the TTFT and TPOT limits decide, `queries` exactly."""
    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Server
    settings.mode = lg.TestMode.PerformanceOnly
    settings.server_target_qps = float(target_qps)
    settings.use_token_latencies = True
    settings.ttft_latency = int(sla.ttft_ms * 1e6)
    settings.tpot_latency = int(sla.tpot_ms * 1e6)
    settings.server_target_latency_ns = int(max(sla.ttft_ms, sla.tpot_ms) * 1e6 * 100)  # token limits decide
    settings.min_query_count = queries
    settings.max_query_count = settings.min_query_count
    settings.min_duration_ms = int(min_duration_s * 1000)
    settings.max_duration_ms = int(max_duration_s * 1000)
    settings.schedule_rng_seed = settings.sample_index_rng_seed = settings.qsl_rng_seed = int(seed) + 1

    return settings


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _why_invalid(summary: dict[str, str]) -> str:
    if summary.get("Result is") == "VALID":
        return ""
    failed = [k for k in ("Performance constraints satisfied", "Min duration satisfied", "Min queries satisfied",
                          "Early stopping satisfied") if summary.get(k, "").lower().startswith("no")]
    return ", ".join(f"{k.lower()}: no" for k in failed) or "see LoadGen's log"


def referee_rounds(make_engine: Callable[[], Any], trace: Sequence[TraceRequest], *, rate_per_s: float,
                   sla: Sla = DEFAULT_SLA, rounds: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """LoadGen, then optlab's load generator process on LoadGen's own arrivals, `rounds` times, on
    `trace`'s requests at `rate_per_s` (a fresh engine from `make_engine()` for every run). One row per
    round: both sides' TTFT/TPOT p50/p99 and the ratios optlab / LoadGen, with LoadGen's verdict."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rows = []
    for round_index in range(rounds):
        started = time.perf_counter()
        theirs = loadgen_generation_run(make_engine(), trace, target_qps=rate_per_s, sla=sla,
                                        seed=seed + round_index)
        offsets, indices = theirs.pop("arrivals")
        ours = drive(make_engine(), trace, offsets, indices=indices, sla=sla).summary
        row = {"round": round_index + 1, "rate_per_s": rate_per_s, "arrivals": len(offsets),
               "loadgen_result": theirs["result"], "loadgen_valid": theirs["valid"],
               "loadgen_why_invalid": theirs["why_invalid"], "optlab_send_lag_p99_ms": ours["send_lag_p99_ms"],
               "seconds": round(time.perf_counter() - started, 1)}
        for name in _FIGURES:
            mine, other = ours.get(name), theirs.get(name)
            row[f"optlab_{name}"], row[f"loadgen_{name}"] = mine, other
            row[f"{name}_ratio"] = mine / other if mine and other else None
        rows.append(row)
    return rows


def agreement(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence: do optlab and LoadGen agree on TTFT and TPOT (median optlab / LoadGen ratio over
    the rounds within 0.85-1.15)? p99s count only from LoadGen's VALID rounds."""
    low, high = AGREE
    parts = []
    for name, label in (("ttft_p50_ms", "TTFT p50"), ("tpot_p50_ms", "TPOT p50"),
                        ("ttft_p99_ms", "TTFT p99"), ("tpot_p99_ms", "TPOT p99")):
        usable = [r for r in rows if r.get(f"{name}_ratio") and (name.endswith("p50_ms") or r["loadgen_valid"])]
        if not usable:
            parts.append(f"{label}: not available (LoadGen judged no round VALID)")
            continue
        ratios = [r[f"{name}_ratio"] for r in usable]
        median = statistics.median(ratios)
        verdict = "agree" if low <= median <= high else "differ"
        parts.append(f"{label} optlab/LoadGen {median:.2f} (range {min(ratios):.2f}-{max(ratios):.2f}, "
                     f"{len(usable)} round(s)): {verdict}")
    valid = sum(bool(r["loadgen_valid"]) for r in rows)
    why = next((r["loadgen_why_invalid"] for r in rows if not r["loadgen_valid"]), "")
    verdict = f"LoadGen VALID in {valid} of {len(rows)} round(s)" + (f" (otherwise {why})" if why else "")
    return f"{verdict}; " + "; ".join(parts)
