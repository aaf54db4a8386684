"""A generation server: one loop that keeps sequences in flight, driven open loop by a request trace.

The batch `serving.Server` answers each request once per model call; a language model answers token
by token and a scheduler (an `Engine`: sequential, static, continuous, paged, speculative) decides
which sequences advance at each step. `GenerationServer.run(trace)` is the serving loop and the
open-loop driver at once: before every step it admits (`engine.add`) each request whose *scheduled*
arrival has passed, then calls `engine.step()` while work remains, timestamping every `TokenEvent`
as it comes back; when idle it sleeps until the next arrival. Latency counts from the scheduled
arrival, so a slow step delays the next admission and that wait shows in TTFT (no coordinated
omission). The clock is a parameter: a `FakeClock` that an engine advances makes a test with known
step times exact.

Every run is bounded: it stops early (`stopped_early`) when a request has waited more than
`saturation_s` for its first token, or after `max_duration_s`; requests left unfinished count as
not completed.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import pandas as pd

from optlab.generation.engine import require_engine
from optlab.generation.service import drive
from optlab.generation.trace import TraceRequest, at_rate
from optlab.instruments.generation import CertainMiss, RequestRecord, Sla, request_frame, summarize
from optlab.serving.sla import MIN_P99_REQUESTS, SlaSearch, check_budget, passes, throughput_at_sla

_START_DELAY_NS = 5_000_000  # the first arrival leaves the loop time to start


class Clock(Protocol):
    def now_ns(self) -> int: ...
    def sleep_until_ns(self, t_ns: int) -> None: ...


class WallClock:
    """The monotonic clock; sleeps for real."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until_ns(self, t_ns: int) -> None:
        delay = (t_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)


@dataclass
class FakeClock:
    """A clock that moves only when told: `advance(ns)` (an engine's simulated work) or a sleep."""

    t_ns: int = 0

    def now_ns(self) -> int:
        return self.t_ns

    def sleep_until_ns(self, t_ns: int) -> None:
        self.t_ns = max(self.t_ns, t_ns)

    def advance(self, ns: int) -> None:
        self.t_ns += int(ns)


@dataclass
class GenerationResult:
    """One run: per-request records, the summary row, and why it stopped early ("" when it did not)."""

    records: list[RequestRecord]
    summary: dict[str, Any]
    stopped_early: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> pd.DataFrame:
        return request_frame(self.records)


class GenerationServer:
    """Serves a trace through one engine (see the module's docstring)."""

    def __init__(self, engine: Any, *, clock: Clock | None = None, saturation_s: float = 10.0,
                 max_duration_s: float = 600.0, label: str = ""):
        require_engine(engine)
        self.engine = engine
        self.clock = clock or WallClock()
        self.saturation_s = saturation_s
        self.max_duration_s = max_duration_s
        self.label = label or type(engine).__name__

    def run(self, trace: Sequence[TraceRequest], *, sla: Sla | None = None, n_boot: int = 1000,
            on_token: Callable[[str, int, int], None] | None = None,
            fail_fast: CertainMiss | None = None) -> GenerationResult:
        """Offer `trace` open loop; returns the records and the summary (with goodput at `sla` if given).
        `fail_fast`: stop early once the SLA's p99 is missed for certain (`instruments.generation.CertainMiss`)."""
        if not len(trace):
            raise ValueError("run needs at least one request in the trace; build one with generation.trace")
        pending = sorted(trace, key=lambda r: r.arrival_s)
        t0 = self.clock.now_ns() + _START_DELAY_NS
        scheduled = {r.request_id: t0 + int(r.arrival_s * 1e9) for r in pending}
        tokens: dict[str, list[int]] = {r.request_id: [] for r in pending}
        kv = KvTracker(self.engine)
        reason = self._loop(pending, scheduled, tokens, t0, on_token, kv, fail_fast)
        records = [RequestRecord(r.request_id, scheduled[r.request_id], tuple(tokens[r.request_id]),
                                 len(r.prompt_ids), r.max_new_tokens) for r in trace]
        summary = summarize(records, sla=sla, n_boot=n_boot, kv_cache=kv.figures())
        summary.update(engine=self.label, stopped_early=bool(reason), offered_per_s=_offered(trace))
        return GenerationResult(records, summary, reason, [reason] if reason else [])

    def _loop(self, pending: list[TraceRequest], scheduled: dict[str, int], tokens: dict[str, list[int]],
              t0: int, on_token, kv: KvTracker, fail_fast: CertainMiss | None = None) -> str:
        """Admit on arrival, step while work remains; returns why it stopped early ("" if it ran its course)."""
        clock, engine = self.clock, self.engine
        waiting: dict[str, int] = {}  # admitted, no token yet: request id -> scheduled time
        asked = {r.request_id: r.max_new_tokens for r in pending}
        started: dict[str, int] = {}  # first token came, last not yet: request id -> its first token's time
        over: tuple[set[str], set[str]] = (set(), set())  # over fail_fast's TTFT limit, over its TPOT limit
        hard_end = t0 + int(self.max_duration_s * 1e9)
        limit_ns = int(self.saturation_s * 1e9)
        i = 0
        while i < len(pending) or engine.has_work():
            now = clock.now_ns()
            while i < len(pending) and scheduled[pending[i].request_id] <= now:
                r = pending[i]
                engine.add(r.request_id, list(r.prompt_ids), r.max_new_tokens)
                waiting[r.request_id] = scheduled[r.request_id]
                i += 1
            if not engine.has_work():
                clock.sleep_until_ns(scheduled[pending[i].request_id])
                continue
            events = engine.step()
            now = clock.now_ns()
            kv.sample()
            if fail_fast is not None:  # this step's tokens came at `now`: a first or last token now counts too
                over[0].update(rid for rid, t in waiting.items() if fail_fast.ttft_over(now - t))
                over[1].update(rid for rid, t in started.items() if fail_fast.tpot_over(now - t, asked[rid]))
                if reason := fail_fast.reason(len(over[0]), len(over[1])):
                    return reason
            for event in events:
                tokens[event.request_id].append(now)
                waiting.pop(event.request_id, None)
                if event.finished:
                    started.pop(event.request_id, None)
                elif len(tokens[event.request_id]) == 1:
                    started[event.request_id] = now
                if on_token is not None:
                    on_token(event.request_id, event.token, now)
            if waiting and now - min(waiting.values()) > limit_ns:
                return (f"over-saturated: a request waited more than {self.saturation_s:g} s for its first token; "
                        "the engine cannot sustain this load")
            if now > hard_end:
                return f"stopped after {self.max_duration_s:g} s"
        return ""


class KvTracker:
    """Samples the engine's `kv_bytes()` after every step: peak reserved and used (MB) and the share
    of reserved bytes that held nothing, over the whole run (sum of reserved - used over sum of reserved)."""

    def __init__(self, engine: Any):
        self.probe = getattr(engine, "kv_bytes", None)
        self.peak_reserved = self.peak_used = self.sum_reserved = self.sum_used = 0

    def sample(self) -> None:
        if not callable(self.probe):
            return
        kv = self.probe()
        self.peak_reserved, self.peak_used = max(self.peak_reserved, kv.reserved), max(self.peak_used, kv.used)
        self.sum_reserved += kv.reserved
        self.sum_used += kv.used

    def figures(self) -> dict[str, float]:
        if not callable(self.probe) or not self.sum_reserved:
            return {}
        return {"kv_cache_reserved_mb": self.peak_reserved / 1e6, "kv_cache_used_mb": self.peak_used / 1e6,
                "kv_cache_unused_share": 1.0 - self.sum_used / self.sum_reserved}


def _offered(trace: Sequence[TraceRequest]) -> float | None:
    span = max(r.arrival_s for r in trace) - min(r.arrival_s for r in trace)
    return (len(trace) - 1) / span if span > 0 and len(trace) > 1 else None


@dataclass(frozen=True)
class GoodputSearch(SlaSearch):
    """The serving layer's SLA search over offered rates, with a two-part limit: a probe passes when TTFT
    p99 and TPOT p99 are both within `sla`. The search compares one figure, the worse of the two as a
    share of its limit (`sla_share`, <= 1 passes), so `max_p99_ms` is 1. A trace is finite, so fewer
    requests than a batch probe's 662 are allowed; below `MIN_P99_REQUESTS` a p99 is flagged noisy.
    `driver`: "thread" runs each probe through `GenerationServer.run` (driver and serving loop in one
    thread; a `FakeClock` works), "process" through the load generator's own process
    (`generation.service.drive`: the driver of every batch-server figure, its schedule kept by another
    interpreter). `fail_fast` stops a probe as soon as enough requests are over the TTFT or the TPOT limit to
    put its p99 over it for certain (`instruments.generation.CertainMiss`): a failing probe then costs
    seconds, not the trace's whole span, and fails as it would have."""

    sla: Sla = Sla()
    driver: str = "thread"
    fail_fast: bool = True
    max_p99_ms: float = 1.0
    min_requests: int = 64
    start_per_s: float = 2.0
    min_per_s: float = 0.05
    max_per_s: float = 1000.0
    max_probes: int = 10

    def __post_init__(self):
        if self.min_requests < 1:
            raise ValueError(f"GoodputSearch.min_requests must be >= 1, got {self.min_requests}")
        if not 0 < self.rel_tol < 1:
            raise ValueError(f"rel_tol must be in (0, 1), got {self.rel_tol!r}")
        if self.driver not in DRIVERS:
            raise ValueError(f"unknown driver {self.driver!r}; use one of {', '.join(DRIVERS)}")
        check_budget(self.budget_s)


@dataclass
class GoodputResult:
    """The highest offered rate meeting both limits (0 when none did), the figures there, and every probe;
    `upper_per_s` and `bound` as `sla.SlaResult` has them ("upper": the time budget ran out before any rate
    passed, so only goodput < `upper_per_s` is known; "bracket": it ran out between the two; "lower": still
    within the SLA at the highest rate probed)."""

    goodput_per_s: float
    at_best: dict[str, Any]
    curve: pd.DataFrame
    search: GoodputSearch
    notes: list[str] = field(default_factory=list)
    upper_per_s: float | None = None
    bound: str = ""

    def row(self) -> dict[str, Any]:
        best = self.at_best
        return {"goodput_per_s": self.goodput_per_s, "goodput_upper_per_s": self.upper_per_s, "bound": self.bound,
                "sla": self.search.sla.describe(),
                "ttft_p99_ms": best.get("ttft_p99_ms"), "tpot_p99_ms": best.get("tpot_p99_ms"),
                "output_tokens_per_s": best.get("output_tokens_per_s"), "probes": len(self.curve),
                "noisy": bool(best.get("requests", 0) < MIN_P99_REQUESTS), "note": "; ".join(self.notes)}


def sla_share(summary: dict[str, Any], sla: Sla) -> float:
    """The worse of TTFT p99 / its limit and TPOT p99 / its limit (inf when either is missing)."""
    ttft, tpot = summary.get("ttft_p99_ms"), summary.get("tpot_p99_ms")
    if ttft is None or tpot is None:
        return math.inf
    return max(ttft / sla.ttft_ms, tpot / sla.tpot_ms)


def generation_probe(make_server: Callable[[], GenerationServer], trace: Sequence[TraceRequest],
                     search: GoodputSearch, *, seed: int = 0,
                     on_probe: Callable[[dict], None] | None = None) -> Callable[[float], dict]:
    """A probe for `sla.throughput_at_sla`: `trace`'s requests re-timed to the rate, served by a fresh
    server (and engine) from `make_server()`."""
    run = DRIVERS[search.driver]

    def probe(rate: float) -> dict[str, Any]:
        timed = at_rate(list(trace), rate, seed=seed)
        fail_fast = CertainMiss.of(search.sla, len(timed)) if search.fail_fast else None
        s, stopped = run(make_server(), timed, search.sla, fail_fast)
        row = {**s, "p99_ms": sla_share(s, search.sla), "requests": s["completed"],
               "failed_rate": 1 - s["completed"] / max(s["requests"], 1), "stopped_early": stopped,
               "rate_per_s": rate, "offered_per_s": rate}
        row["passed"] = passes(row, search)
        if on_probe is not None:
            on_probe(row)
        return row
    return probe


def _in_thread(server: GenerationServer, timed: list[TraceRequest], sla: Sla,
               fail_fast: CertainMiss | None = None) -> tuple[dict[str, Any], bool]:
    with _closing(server.engine):
        result = server.run(timed, sla=sla, n_boot=200, fail_fast=fail_fast)
    return result.summary, result.stopped_early != ""


def _by_process(server: GenerationServer, timed: list[TraceRequest], sla: Sla,
                fail_fast: CertainMiss | None = None) -> tuple[dict[str, Any], bool]:
    with _closing(server.engine):
        result = drive(server.engine, timed, [r.arrival_s for r in timed], sla=sla, label=server.label,
                       saturation_s=server.saturation_s, fail_fast=fail_fast)
    return {**result.summary, "engine": server.label}, bool(result.summary["stopped_early"])


@contextlib.contextmanager
def _closing(engine: Any) -> Iterator[None]:
    """A probe's engine is closed when the probe ends: an engine with its own thread (transformers'
    manager) would otherwise go on decoding what the probe left in flight, beside the next probe."""
    try:
        yield
    finally:
        getattr(engine, "close", lambda: None)()


Driver = Callable[[GenerationServer, list[TraceRequest], Sla, "CertainMiss | None"], tuple[dict[str, Any], bool]]
DRIVERS: dict[str, Driver] = {
    "thread": _in_thread, "process": _by_process}


def goodput_at_sla(make_server: Callable[[], GenerationServer], trace: Sequence[TraceRequest],
                   search: GoodputSearch = GoodputSearch(), *, seed: int = 0,
                   on_probe: Callable[[dict], None] | None = None) -> GoodputResult:
    """The highest Poisson rate at which a fresh `make_server()` keeps TTFT p99 and TPOT p99 within
    `search.sla` on `trace`'s requests: the serving layer's bracket-and-bisect search (`sla.throughput_at_sla`)."""
    if len(trace) < search.min_requests:
        raise ValueError(f"the trace has {len(trace)} requests, fewer than the search's min_requests "
                         f"({search.min_requests}); draw a longer trace or lower min_requests")
    found = throughput_at_sla(generation_probe(make_server, trace, search, seed=seed, on_probe=on_probe), search)
    curve = found.curve.rename(columns={"p99_ms": "sla_share"})
    notes = []
    if found.bound == "upper":
        upper = f"{found.upper_per_s:.3g}/s"
        notes.append(f"an upper bound: the search's time budget ({search.budget_s:g} s) ran out before any rate met "
                     f"{search.sla.describe()}; {upper} failed, so goodput < {upper}")
        return GoodputResult(0.0, {}, curve, search, notes, found.upper_per_s, "upper")
    if not found.met:
        lowest = curve.iloc[0]
        notes.append(f"nothing meets {search.sla.describe()}: at the lowest rate tried "
                     f"({lowest['offered_per_s']:.3g}/s) "
                     f"TTFT p99 {_ms(lowest.get('ttft_p99_ms'))}, TPOT p99 {_ms(lowest.get('tpot_p99_ms'))}")
        return GoodputResult(0.0, {}, curve, search, notes, found.upper_per_s)
    best = curve[(curve["offered_per_s"] == found.throughput_per_s) & curve["passed"]].iloc[-1].to_dict()
    if found.bound == "lower":
        notes.append(f"still within the SLA at the highest rate probed ({found.throughput_per_s:.3g}/s): a lower bound")
    elif found.bound == "bracket":
        why = "the time budget" if found.notes and "time budget" in found.notes[0] else "the probes"
        notes.append(f"a bracket: {why} ran out between {found.throughput_per_s:.3g}/s (passed) and "
                     f"{found.upper_per_s:.3g}/s (failed)")
    return GoodputResult(found.throughput_per_s, best, curve, search, notes, found.upper_per_s, found.bound)


def _ms(value: Any) -> str:
    return "not available" if value is None or not math.isfinite(value) else f"{value:,.0f} ms"
