"""A generation engine behind the batch server's interface, so the load generator's process drives it.

`serving.loadgen.run` offers load to anything with `start()`, `stop()` and
`submit(payload, request_id, *, scheduled_ns, on_done, key)`: the batch `Server`, the RTB case's
in-process deployments, HTTP targets. `GenerationService` is that interface around an `Engine`:
`submit` (called by the generator's receiving thread) queues a request, a `TraceRequest` whose
prompt and output length the engine needs; one loop thread admits whatever arrived before each
scheduler step (`engine.add`), steps while work remains, and answers each request once, at its last
token, with a `Reply` carrying the time of its first token and its token count. The load
generator's records then hold TTFT (first token - scheduled send), TPOT ((last - first token) /
(tokens - 1)) and the end-to-end latency, timed from the schedule of a separate process: the
driver, arrivals and coordinated-omission rule of every batch-server figure.

`GenerationServer.run` is the in-thread alternative (driver and loop in one thread, every token's
time kept for inter-token latency, a fake clock for exact tests). This service is what the LoadGen
referee replays LoadGen's own arrivals through (`generation.referee`).
"""
from __future__ import annotations

import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from optlab.generation.engine import require_engine
from optlab.generation.trace import TraceRequest
from optlab.instruments.generation import CertainMiss, Sla, meets
from optlab.serving import loadgen
from optlab.serving.schedules import Replay
from optlab.serving.server import ERROR, OK, TIMEOUT, Reply


class _Scheduler(NamedTuple):
    """What the load generator's summary calls a server's policy: here the engine's name."""

    name: str


class _InFlight:
    __slots__ = ("request_id", "on_done", "admitted_ns", "first_ns", "tokens", "asked")

    def __init__(self, request_id: int, on_done: Callable[[Reply], None], admitted_ns: int, asked: int = 0):
        self.request_id, self.on_done, self.admitted_ns, self.asked = request_id, on_done, admitted_ns, asked
        self.first_ns = self.tokens = 0


class GenerationService:
    """Serve `engine` (add / step / has_work) to `loadgen.run` (see the module's docstring).

    Use `start()` and `stop()` (or a `with` block); `threads` is what the engine's model calls use,
    for the summary's `threads_per_worker` column."""

    workers = 1

    def __init__(self, engine: Any, *, label: str = "", threads: int = 1, saturation_s: float | None = None,
                 fail_fast: CertainMiss | None = None):
        require_engine(engine)
        self.engine = engine
        self.name = label or type(engine).__name__
        self.policy = _Scheduler(self.name)
        self.threads_per_worker = threads
        self.notes: list[str] = []
        self._inbox: deque[tuple[int, Any, Callable[[Reply], None]]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._failed = ""
        self._thread: threading.Thread | None = None
        self._limit_ns = None if saturation_s is None else int(saturation_s * 1e9)
        # stop once the SLA's p99 is missed for certain (times from admission: from the scheduled send, the
        # load generator's clock, they are longer still)
        self._fail_fast = fail_fast
        self._over: tuple[set[str], set[str]] = (set(), set())  # over the TTFT limit, over the TPOT limit
        self.saturated = False

    def __enter__(self) -> "GenerationService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "GenerationService":
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="optlab-generation", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop; requests still in flight are not answered (the load generator counts them
        as timeouts)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def submit(self, payload: Any, request_id: int = 0, *, scheduled_ns: int | None = None,
               on_done: Callable[[Reply], None] | None = None, key: Any = None) -> None:
        """Queue one request: `payload` has `prompt_ids` and `max_new_tokens` (a `TraceRequest`)."""
        on_done = on_done or _ignore
        if self._failed or self.saturated or self._thread is None:
            now = time.monotonic_ns()
            status, error = (ERROR, self._failed) if self._failed else (TIMEOUT, "the service is not running")
            on_done(Reply(request_id, status, now, now, 0, error=error))
            return
        self._inbox.append((request_id, payload, on_done))
        self._wake.set()

    def _loop(self) -> None:
        engine, inbox, live = self.engine, self._inbox, {}
        while not self._stopping:
            while inbox:
                request_id, payload, on_done = inbox.popleft()
                key, now = str(request_id), time.monotonic_ns()
                try:
                    engine.add(key, list(payload.prompt_ids), int(payload.max_new_tokens))
                except (ValueError, TypeError, AttributeError) as exc:  # a bad request, answered; the rest go on
                    on_done(Reply(request_id, ERROR, now, time.monotonic_ns(), 0, error=str(exc)))
                    continue
                live[key] = _InFlight(request_id, on_done, now, int(payload.max_new_tokens))
            if not engine.has_work():
                self._answer_unfinished(live)
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                events = engine.step()
            except Exception as exc:  # noqa: BLE001 - answered "error", said once, and later requests too
                self._fail(live, f"{type(exc).__name__}: {exc}")
                return
            now = time.monotonic_ns()
            if self._limit_ns is not None and any(e.tokens == 0 and now - e.admitted_ns > self._limit_ns
                                                  for e in live.values()):
                self._saturate(live, now)
                return
            if self._fail_fast is not None and self._missed_for_certain(live, now):
                return
            in_step = len(live)
            for event in events:
                entry = live[event.request_id]
                entry.tokens += 1
                if entry.tokens == 1:
                    entry.first_ns = now
                if event.finished:
                    del live[event.request_id]
                    entry.on_done(Reply(entry.request_id, OK, entry.admitted_ns, now, in_step,
                                        first_token_ns=entry.first_ns, tokens=entry.tokens))

    def _missed_for_certain(self, live: dict[str, _InFlight], now: int) -> bool:
        """Counts the requests over the TTFT limit (no first token after the limit; this step's tokens came at
        `now` at the earliest, so a first token now counts too) and over the TPOT limit (`CertainMiss`); once
        either reaches the number that puts the p99 over it whatever the rest do, the run stops as `_saturate`
        stops it, with its reason."""
        rule, (ttft, tpot) = self._fail_fast, self._over
        ttft.update(key for key, e in live.items() if e.tokens == 0 and rule.ttft_over(now - e.admitted_ns))
        tpot.update(key for key, e in live.items() if e.tokens and rule.tpot_over(now - e.first_ns, e.asked))
        reason = rule.reason(len(ttft), len(tpot))
        if not reason:
            return False
        self.saturated = True
        self.notes.append(reason)
        self._answer_pending(live, now, TIMEOUT, "stopped early: the SLA was missed for certain")
        return True

    @staticmethod
    def _answer_unfinished(live: dict[str, _InFlight]) -> None:
        """Requests the engine dropped without a last token (it has no work left) are answered with the
        tokens they got, so the run never waits for them; fewer tokens than asked is not completed."""
        now = time.monotonic_ns()
        for key, entry in list(live.items()):
            del live[key]
            entry.on_done(Reply(entry.request_id, OK, entry.admitted_ns, now, 0, first_token_ns=entry.first_ns,
                                tokens=entry.tokens))

    def _saturate(self, live: dict[str, _InFlight], now: int) -> None:
        """A request waited longer than `saturation_s` for its first token: the engine cannot keep up.
        Everything in flight and every later request is answered "timeout" at once, so the run ends
        now rather than after the engine has worked through the backlog."""
        self.saturated = True
        self.notes.append(f"over-saturated: a request waited more than {self._limit_ns / 1e9:g} s for its first "
                          "token; the engine cannot sustain this load")
        self._answer_pending(live, now, TIMEOUT, "over-saturated")

    def _fail(self, live: dict[str, _InFlight], message: str) -> None:
        self._failed = message
        self.notes.append(f"the engine failed and the service stopped: {message}")
        self._answer_pending(live, time.monotonic_ns(), ERROR, message)

    def _answer_pending(self, live: dict[str, _InFlight], now: int, status: int, error: str) -> None:
        """Answer `status` to every request in flight and every one still in the inbox (the loop stops)."""
        pending = list(live.values()) + [_InFlight(i, done, now) for i, _, done in self._inbox]
        self._inbox.clear()
        for entry in pending:
            entry.on_done(Reply(entry.request_id, status, entry.admitted_ns, now, 0, error=error))


def drive(engine: Any, trace: Sequence[TraceRequest], offsets_s: Sequence[float], *,
          indices: Sequence[int] | None = None, sla: Sla | None = None, label: str = "",
          drain_s: float = 120.0, saturation_s: float | None = None,
          fail_fast: CertainMiss | None = None) -> loadgen.LoadResult:
    """Offer `trace`'s requests to `engine` at `offsets_s` (seconds from the start, sorted) through the
    load generator's process: request i is `trace[indices[i] % len(trace)]` (`indices` default 0, 1, ...).
    The summary gains TTFT/TPOT percentiles and, with `sla`, `good_requests` and `goodput_per_s`
    (requests that completed within both limits, per second of the run). With `saturation_s` the run
    stops early (`stopped_early`) once a request has waited that long for its first token; with `fail_fast`
    once its SLA's p99 is missed for certain (`instruments.generation.CertainMiss`)."""
    offsets = np.asarray(offsets_s, dtype=np.float64)
    if offsets.size == 0 or not len(trace):
        raise ValueError("drive needs at least one arrival and one request; build a trace with generation.trace")
    keys = np.arange(offsets.size) if indices is None else np.asarray(indices, dtype=np.int64)
    if keys.size != offsets.size:
        raise ValueError(f"indices has {keys.size} entries for {offsets.size} arrivals; pass one per arrival")
    with tempfile.TemporaryDirectory(prefix="optlab-arrivals-") as folder:
        path = Path(folder) / "arrivals.npy"
        np.save(path, offsets)
        service = GenerationService(engine, label=label, saturation_s=saturation_s, fail_fast=fail_fast)
        result = loadgen.run(service, list(trace), Replay(str(path)), keys=keys, drain_s=drain_s, saturation_s=60.0)
    if service.saturated:
        result.summary.update(stopped_early=True, stop_reason=service.notes[-1])
    frame = result.requests  # completed: answered with every token asked for (an eos ends one early)
    asked = np.array([trace[int(k) % len(trace)].max_new_tokens for k in frame["key"]], dtype=np.int64)
    tokens = frame["output_tokens"] if "output_tokens" in frame else 0
    frame["completed"] = frame["status"].eq("ok") & (np.asarray(tokens) >= asked)
    result.summary["completed"] = int(frame["completed"].sum())
    if sla is not None:
        span = result.summary.get("duration_s")
        good = int(meets(result.requests, sla).sum()) if "ttft_ms" in result.requests else 0
        result.summary.update(good_requests=good, goodput_per_s=good / span if span and span == span else None,
                              sla_ttft_ms=sla.ttft_ms, sla_tpot_ms=sla.tpot_ms)
    return result


def _ignore(_reply: Reply) -> None:
    return None
