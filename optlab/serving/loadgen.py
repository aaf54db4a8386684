"""Drive a `Server` with a load from its own process and measure what a client sees.

`run(server, requests, load)` starts the generator process (`generator_child`, pinned to a core of
its own where there is more than one), which sends request ids at their scheduled times; this
process answers each through the server. Latency counts from each request's *scheduled* send
time to its answer, so a late generator or a long queue both show (no coordinated omission).
Every run is bounded: by the load's duration and count, by a drain time after the last send,
and by an over-saturation stop (more than `saturation_s` of offered load waiting).

Results (`LoadResult`): one row of figures (p50/p95/p99 with bootstrap intervals from
`optlab.instruments.timing.summarize`, achieved vs offered throughput, shed/errors/timeouts),
the per-request frame and a per-second series.
"""
from __future__ import annotations

import math
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optlab.instruments.generation import quantile_figures
from optlab.instruments.timing import summarize
from optlab.serving.generator_child import MAX_PER_MESSAGE, SEND
from optlab.serving.policies import NoBatching
from optlab.serving.schedules import Closed, Load, Poisson, arrivals
from optlab.serving.server import OK, STATUS, TIMEOUT, Reply, Server

MAX_RATE_PER_S = 200_000
_UNANSWERED = -1
_START_DELAY_NS = 20_000_000


@dataclass
class LoadResult:
    """One run: `summary` (a flat row), `requests` (one row per request sent), `series` (per time bin)."""

    summary: dict[str, Any]
    requests: pd.DataFrame
    series: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        s = self.summary
        return (f"LoadResult({s['load']}, {s['policy']}: p99 {s['p99_ms']:.3g} ms, "
                f"{s['achieved_per_s']:.4g}/s achieved of {s['offered_per_s']:.4g}/s offered, "
                f"ok {s['ok']}, shed {s['shed']}, errors {s['errors']}, timeouts {s['timeouts']}"
                f"{', stopped early' if s['stopped_early'] else ''})")


def run(server: Server, requests: Sequence[dict[str, np.ndarray]], load: Load, *, seed: int = 0,
        keys: np.ndarray | None = None, drain_s: float = 2.0, saturation_s: float = 1.0,
        headroom_per_s: float | None = None, series_bin_s: float = 1.0, pin: bool = True,
        label: str | None = None) -> LoadResult:
    """Offer `load` to `server` (started here if needed, stopped at the end), cycling through
    `requests` (or sending `requests[keys[i] % len(requests)]` with cache key `keys[i]`)."""
    if not len(requests):
        raise ValueError("run needs at least one request payload; pass data.requests or a list of batches")
    offered = load.offered_per_s
    if offered == offered and offered > MAX_RATE_PER_S:
        raise ValueError(f"an offered load of {offered:g}/s is more than this generator can produce "
                         f"(at most {MAX_RATE_PER_S}/s); lower the rate or use MLPerf LoadGen (serving.referee)")
    closed = isinstance(load, Closed)
    offsets_ns = (arrivals(load, seed) * 1e9).astype(np.int64)
    capacity = int(min(load.max_requests, load.duration_s * 50_000)) if closed else len(offsets_ns)
    if keys is not None and len(keys) < capacity:
        raise ValueError(f"keys has {len(keys)} entries for up to {capacity} requests; pass one key per request")
    state = _State(capacity, closed)
    # a closed loop cannot over-saturate: at most `concurrency` requests are ever outstanding
    limit = capacity + 1 if closed else max(256, int(offered * saturation_s))
    notes: list[str] = []
    server.start()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    schedule = tempfile.NamedTemporaryFile(prefix="optlab-schedule-", suffix=".bin", delete=False)
    process = None
    try:
        schedule.write(offsets_ns.tobytes())
        schedule.close()
        cpu = _generator_cpu() if pin else -1
        max_count = capacity
        process = subprocess.Popen(
            [sys.executable, "-m", "optlab.serving.generator_child", str(child.fileno()),
             "-" if closed else schedule.name, str(load.concurrency if closed else 0), str(max_count),
             str(int(load.duration_s * 1e9)), str(cpu)],
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        parent.settimeout(10.0)
        if parent.recv(64) != b"READY":
            raise RuntimeError("the load generator process did not start; see its stderr above")
        t0 = time.monotonic_ns() + _START_DELAY_NS
        parent.send(struct.pack("<q", t0))
        state.t0 = t0
        reason = _pump(parent, server, requests, keys, state, limit, t0 + int((load.duration_s + 5) * 1e9), notes,
                       saturation_s)
        _drain(state, drain_s if not reason else min(drain_s, 0.2))
    finally:
        if process is not None:
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=2.0)
        parent.close()
        server.stop()
        Path(schedule.name).unlink(missing_ok=True)
    return _result(server, load, state, reason, notes, headroom_per_s, series_bin_s, label)


class _State:
    """Per-request arrays, written by the receiving loop and the server's workers."""

    def __init__(self, capacity: int, closed: bool):
        self.scheduled = np.zeros(capacity, np.int64)
        self.sent = np.zeros(capacity, np.int64)
        self.received = np.zeros(capacity, np.int64)
        self.start = np.zeros(capacity, np.int64)
        self.done = np.zeros(capacity, np.int64)
        self.status = np.full(capacity, _UNANSWERED, np.int8)
        self.batch = np.zeros(capacity, np.int32)
        self.first_token = np.zeros(capacity, np.int64)  # streamed answers (generation): 0 otherwise
        self.tokens = np.zeros(capacity, np.int32)
        self.keys = np.full(capacity, -1, np.int64)
        self.stages = np.full(capacity, "", dtype=object)  # who answered, where a deployment names its parts
        self.staged = False  # any reply named its part (Reply.stage)
        self.submitted = 0
        self.answered = 0
        self.sent_by_generator = 0
        self.lock = threading.Lock()
        self.closed = closed
        self.sock: socket.socket | None = None
        self.t0 = 0

    def on_done(self, reply: Reply) -> None:
        i = reply.request_id
        self.start[i], self.done[i], self.batch[i] = reply.start_ns, reply.done_ns, reply.batch_size
        self.status[i] = reply.status
        if reply.tokens:
            self.first_token[i], self.tokens[i] = reply.first_token_ns, reply.tokens
        if reply.stage:
            self.stages[i], self.staged = reply.stage, True
        with self.lock:
            self.answered += 1
        sock = self.sock
        if self.closed and sock is not None:
            try:
                sock.send(struct.pack("<q", i))
            except OSError:  # the generator has finished and closed its end: nothing waits for this answer
                pass


def _pump(sock, server, requests, keys, state: _State, limit: int, hard_end_ns: int, notes, saturation_s) -> str:
    """Receive requests from the generator and hand them to the server until it says it is done;
    returns why the run stopped early ("" when it ran its course)."""
    state.sock = sock
    sock.settimeout(0.05)
    n_payloads, reason = len(requests), ""
    records, clock, submit, on_done = SEND.iter_unpack, time.monotonic_ns, server.submit, state.on_done
    size = SEND.size * MAX_PER_MESSAGE
    while True:
        try:
            message = sock.recv(size)
        except TimeoutError:
            if clock() > hard_end_ns:
                notes.append("the generator did not finish within its bound; stopped")
                return "generator timed out"
            continue
        except ConnectionResetError:  # the generator is gone: what it sent has been handled
            notes.append("the generator's connection closed before its last message")
            state.sock = None
            return reason
        if not message:
            return reason or "generator exited"
        now = clock()
        for i, scheduled, sent_ns in records(message):
            if i < 0:
                state.sent_by_generator = scheduled
                state.sock = None  # no more answers to the generator: it is done
                try:
                    sock.send(b"B")
                except OSError:
                    pass
                return reason
            state.scheduled[i], state.sent[i], state.received[i] = scheduled, sent_ns, now
            if keys is None:
                payload, key = requests[i % n_payloads], None
            else:
                key = int(keys[i])
                payload = requests[key % n_payloads]
                state.keys[i] = key
            submit(payload, i, scheduled_ns=scheduled, on_done=on_done, key=key)
            state.submitted += 1
        if not reason and state.submitted - state.answered > limit:
            reason = (f"over-saturated: {state.submitted - state.answered} requests waiting (more than "
                      f"{saturation_s:g} s of offered load); the server cannot sustain this load")
            notes.append(reason)
            try:
                sock.send(b"S")
            except OSError:
                pass


def _drain(state: _State, drain_s: float) -> None:
    end = time.monotonic() + drain_s
    while state.answered < state.submitted and time.monotonic() < end:
        time.sleep(0.002)


def _generator_cpu() -> int:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return -1
    return cpus[-1] if len(cpus) > 1 else -1


def _result(server, load, state: _State, reason: str, notes: list[str], headroom_per_s, series_bin_s,
            label) -> LoadResult:
    n = state.submitted
    sent = state.received[:n] > 0
    idx = np.flatnonzero(sent)
    status = state.status[idx].astype(np.int64)
    status[status == _UNANSWERED] = TIMEOUT  # never answered within the run's bound
    scheduled, received = state.scheduled[idx], state.received[idx]
    start, done = state.start[idx], state.done[idx]
    ok = status == OK
    latency_ns = np.where(ok, done - scheduled, 0)
    frame = pd.DataFrame({
        "request_id": idx, "key": state.keys[idx],
        "scheduled_s": (scheduled - state.t0) / 1e9,
        "send_lag_ms": (state.sent[idx] - scheduled) / 1e6,
        "transport_ms": (received - state.sent[idx]) / 1e6,
        "wait_ms": np.where(ok, (start - scheduled) / 1e6, np.nan),
        "service_ms": np.where(ok & (state.batch[idx] > 0), (done - start) / 1e6, np.nan),
        "latency_ms": np.where(ok, latency_ns / 1e6, np.nan),
        "status": np.array(STATUS, dtype=object)[status],
        "batch_size": state.batch[idx],
    })
    if state.staged:  # a multi-part deployment: the part that answered each request
        frame["stage"] = state.stages[idx]
    stats = summarize(latency_ns[ok]) if ok.any() else None
    ok_done = done[ok]
    span_s = max((ok_done.max() - state.t0) / 1e9, 1e-9) if ok.any() else float("nan")
    achieved = float(ok.sum() / span_s) if ok.any() else 0.0
    offered = load.offered_per_s if load.offered_per_s == load.offered_per_s else achieved
    lag_p99 = float(np.quantile(frame["send_lag_ms"], 0.99)) if len(frame) else float("nan")
    kept_up = bool(lag_p99 <= 1.0 or isinstance(load, Closed))
    if not kept_up:
        notes.append(f"the generator fell behind its schedule (p99 send lag {lag_p99:.2f} ms): {offered:.4g}/s is "
                     "more than it produces here; latency still counts from the schedule, but lower the rate "
                     "or use MLPerf LoadGen (serving.referee) for this load")
    below_half = None if headroom_per_s is None else bool(offered <= headroom_per_s / 2)
    if below_half is False:
        notes.append(f"offered {offered:.4g}/s is above half the generator's headroom ({headroom_per_s:.4g}/s): "
                     "flagged, the generator's own delay is part of this figure")
    counts = {name: int((status == code).sum()) for code, name in enumerate(STATUS)}
    shed = counts["shed_queue_full"] + counts["shed_deadline"]
    summary = {
        "label": label or server.name, "load": load.name, "policy": server.policy.name, "workers": server.workers,
        "threads_per_worker": server.threads_per_worker, "offered_per_s": float(offered),
        "achieved_per_s": achieved, "requests": int(len(frame)), "ok": counts["ok"], "shed": shed,
        "shed_queue_full": counts["shed_queue_full"], "shed_deadline": counts["shed_deadline"],
        "errors": counts["error"], "timeouts": counts["timeout"], "probes": _probes(server),
        "failed_rate": float((len(frame) - counts["ok"]) / max(len(frame), 1)),
        **_latency_columns(stats),
        "wait_mean_ms": _mean(frame["wait_ms"]), "service_mean_ms": _mean(frame["service_ms"]),
        "batch_mean": _mean(frame.loc[ok & (frame["batch_size"] > 0), "batch_size"]),
        "send_lag_p99_ms": lag_p99, "generator_kept_up": kept_up, "headroom_per_s": headroom_per_s,
        "below_half_headroom": below_half, "stopped_early": bool(reason), "stop_reason": reason,
        "duration_s": float(span_s) if ok.any() else float("nan"),
    }
    if state.tokens[idx].any():
        summary.update(_token_columns(frame, state, idx, ok, scheduled, done, span_s))
    if counts["error"]:
        notes.append(f"{counts['error']} requests failed inside the model; see requests[requests.status == 'error']")
    return LoadResult(summary, frame, _series(frame, series_bin_s), notes + list(server.notes))


def _token_columns(frame: pd.DataFrame, state: _State, idx: np.ndarray, ok: np.ndarray, scheduled: np.ndarray,
                   done: np.ndarray, span_s: float) -> dict[str, Any]:
    """A streamed answer's figures (`instruments.generation`'s names): `ttft_ms`, `tpot_ms` and
    `output_tokens` per request in `frame` (added in place), their percentiles, and output tokens/s."""
    first, tokens = state.first_token[idx], state.tokens[idx]
    streamed = ok & (tokens > 0)
    frame["output_tokens"] = tokens
    frame["ttft_ms"] = np.where(streamed, (first - scheduled) / 1e6, np.nan)
    frame["tpot_ms"] = np.where(streamed & (tokens > 1), (done - first) / 1e6 / np.maximum(tokens - 1, 1), np.nan)
    total = int(tokens[streamed].sum())
    return {**quantile_figures("ttft", frame["ttft_ms"].to_numpy(), n_boot=200),
            **quantile_figures("tpot", frame["tpot_ms"].to_numpy(), n_boot=200),
            "output_tokens": total, "output_tokens_per_s": total / span_s if span_s == span_s else None}


def _probes(server) -> int | None:
    """Requests the server's admission control let through as probes while shedding (None for a
    target without admission control, such as an HTTP client)."""
    stats = getattr(server, "stats", None)
    return int(stats()["probes"]) if callable(stats) else None


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else float("nan")


def _latency_columns(stats) -> dict[str, float]:
    names = ("p50_ms", "p95_ms", "p99_ms", "p99_ci_low_ms", "p99_ci_high_ms", "p50_ci_low_ms", "p50_ci_high_ms",
             "mean_ms", "max_ms")
    return {name: (float(getattr(stats, name)) if stats is not None else float("nan")) for name in names}


def _series(frame: pd.DataFrame, bin_s: float) -> pd.DataFrame:
    """Counts and latency per `bin_s` of scheduled time (the burst's p99 over time)."""
    if frame.empty:
        return pd.DataFrame(columns=["time_s", "sent", "ok", "shed", "errors", "timeouts", "achieved_per_s",
                                     "p50_ms", "p99_ms"])
    bins = np.floor(frame["scheduled_s"].to_numpy() / bin_s).astype(np.int64)
    grouped = frame.assign(bin=bins).groupby("bin")
    out = pd.DataFrame({
        "time_s": grouped.size().index.to_numpy() * bin_s,
        "sent": grouped.size().to_numpy(),
        "ok": grouped["status"].apply(lambda s: int((s == "ok").sum())).to_numpy(),
        "shed": grouped["status"].apply(lambda s: int(s.str.startswith("shed").sum())).to_numpy(),
        "errors": grouped["status"].apply(lambda s: int((s == "error").sum())).to_numpy(),
        "timeouts": grouped["status"].apply(lambda s: int((s == "timeout").sum())).to_numpy(),
        "p50_ms": grouped["latency_ms"].quantile(0.5).to_numpy(),
        "p99_ms": grouped["latency_ms"].quantile(0.99).to_numpy(),
    })
    out["achieved_per_s"] = out["ok"] / bin_s
    return out


def noop_server() -> Server:
    """A server whose model does nothing: what is left is the generator's and the server's own cost."""
    return Server(_noop, NoBatching())


def _noop(batch):
    return batch


def generator_headroom(*, sla_ms: float = 10.0, start_per_s: float = 500.0, min_per_s: float = 50.0,
                       max_per_s: float = 128_000, min_requests: int = 662, probe_s: float = 0.5,
                       seed: int = 0, failures_to_stop: int = 2, refine: int = 3) -> tuple[float, pd.DataFrame]:
    """The highest offered rate at which a no-op server's p99 stays <= 10% of `sla_ms`, with the
    measured curve. Figures above half of it carry the generator's own delay.

    Rates double from `start_per_s` to `max_per_s` and the search goes on past a failing rate until
    `failures_to_stop` fail in a row: on an idle machine a low rate can fail where a higher one
    passes (a core that sleeps between requests takes up to a millisecond to wake), so stopping at
    the first failure would report that wake-up, not the generator's limit. Then `refine` bisection
    steps between the best rate and the first failing one above it narrow the doubling grid (3 steps:
    within 9%), so a figure just above half the headroom is not flagged for the grid's sake. When
    nothing from `start_per_s` up passes, rates halve down to `min_per_s`; 0 when nothing passes."""
    payloads = [{"x": np.zeros((1, 1), np.float32)}]
    rows: list[dict[str, Any]] = []

    def passes(rate: float) -> bool:
        load = Poisson(rate, duration_s=max(probe_s, 1.2 * min_requests / rate))
        summary = run(noop_server(), payloads, load, seed=seed).summary
        ok = bool(summary["p99_ms"] <= 0.1 * sla_ms and not summary["stopped_early"]
                  and summary["ok"] == summary["requests"])
        rows.append({**summary, "passed": ok})
        return ok

    rate, best, failed_in_a_row = start_per_s, 0.0, 0
    max_per_s = min(max_per_s, MAX_RATE_PER_S)
    while rate <= max_per_s and failed_in_a_row < failures_to_stop:
        if passes(rate):
            best, failed_in_a_row = rate, 0
        else:
            failed_in_a_row += 1
        rate *= 2
    above = [r["offered_per_s"] for r in rows if not r["passed"] and r["offered_per_s"] > best]
    high = min(above, default=None)
    for _ in range(refine if best and high else 0):
        middle = math.sqrt(best * high)
        if passes(middle):
            best = middle
        else:
            high = middle
    rate = start_per_s
    while best == 0.0 and rate / 2 >= min_per_s:
        rate /= 2
        if passes(rate):
            best = rate
    return best, pd.DataFrame(rows).sort_values("offered_per_s").reset_index(drop=True)
