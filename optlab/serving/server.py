"""An in-process server around any Candidate: a bounded request queue, worker threads that form
batches by a policy, admission control that sheds what cannot be served in time, and counts.

Workers are threads: a model call in numpy, ONNX Runtime or torch releases the interpreter lock,
so `workers` calls run at once. `workers x threads_per_worker` must fit the cores: the server
refuses (or, with `oversubscribe="clamp"`, lowers the threads and says so in `notes`).
Every request gets exactly one `Reply` through its `on_done` callback: served ("ok"), "shed"
(queue full, or its deadline cannot be met), "error" (the model raised) or "timeout" (still
queued when the server stopped). Timestamps are `time.monotonic_ns()` (one clock for all processes).
With `BucketedBatching`, requests queue by token-length bucket and each batch is cut to its own
sequence length before the model call (`optlab.serving.bucketing`).
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from optlab.instruments.latency import torch_threads
from optlab.serving.admission import ServiceEstimate
from optlab.serving.bucketing import BucketQueue, FifoQueue, fit_width, refuse_fixed_length, request_length
from optlab.serving.policies import Admission, BucketedBatching, DynamicBatching, Policy

OK, SHED_QUEUE_FULL, SHED_DEADLINE, ERROR, TIMEOUT = range(5)
_NEVER = 1 << 62  # no worker is filling a batch: no queue length wakes one
STATUS = ("ok", "shed_queue_full", "shed_deadline", "error", "timeout")


class Reply(NamedTuple):
    """The answer to one request. `batch_size` is the number of requests served in the same model
    call (0 for a cache hit or a request that never reached the model). A streamed answer (a
    language model's tokens, `generation.service`) also says when its first token came
    (`first_token_ns`) and how many tokens it had (`tokens`); 0 for a one-shot answer. `stage` names
    the part of a multi-part deployment that gave the answer (a two-stage server's "cheap" or
    "expensive", a router's route; "" for a single server). A named
    tuple: one is made per request on the hot path, and tuples are the cheapest immutable records
    Python has."""

    request_id: int
    status: int
    start_ns: int
    done_ns: int
    batch_size: int
    output: Any = None
    error: str | None = None
    first_token_ns: int = 0
    tokens: int = 0
    stage: str = ""

    @property
    def status_name(self) -> str:
        return STATUS[self.status]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), the budget for workers x threads."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_threads(workers: int, threads_per_worker: int, cores: int, oversubscribe: str) -> tuple[int, list[str]]:
    """The threads per worker to use and notes; refuses an oversubscribed plan unless told to clamp."""
    if any(int(n) != n or n < 1 for n in (workers, threads_per_worker)):
        raise ValueError(f"workers and threads_per_worker must be integers >= 1, "
                         f"got {workers} and {threads_per_worker}")
    if workers * threads_per_worker <= cores:
        return threads_per_worker, []
    if oversubscribe != "clamp" or workers > cores:
        hint = "" if workers > cores else ", or pass oversubscribe='clamp'"
        raise ValueError(f"{workers} workers x {threads_per_worker} threads = {workers * threads_per_worker} threads "
                         f"on {cores} cores would oversubscribe them; lower workers or threads_per_worker "
                         f"(workers <= {cores}){hint}")
    clamped = max(1, cores // workers)
    return clamped, [f"threads per worker clamped from {threads_per_worker} to {clamped}: "
                     f"{workers} workers on {cores} cores"]


def concat(payloads: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """One batch from several requests (axis 0), padding trailing axes with zeros where lengths differ
    (text of different lengths); returns the batch and each request's row count.

    The common case (every request's arrays share their trailing shape) goes straight to
    `np.concatenate`: building the padded shape first cost more than the model call at batch 64."""
    first = next(iter(payloads[0].values()))
    rows = [len(first)] * len(payloads) if all(len(next(iter(p.values()))) == len(first) for p in payloads) \
        else [len(next(iter(p.values()))) for p in payloads]
    batch = {}
    for key in payloads[0]:
        arrays = [p[key] for p in payloads]
        trailing = arrays[0].shape[1:]
        if any(a.shape[1:] != trailing for a in arrays):
            shape = np.max([a.shape for a in arrays], axis=0)
            arrays = [np.pad(a, [(0, 0)] + [(0, int(s) - d) for s, d in zip(shape[1:], a.shape[1:], strict=True)])
                      for a in arrays]
        batch[key] = np.concatenate(arrays, axis=0)
    return batch, rows


def _cut(array: Any, rows: list[int]) -> list[Any]:
    """`array` cut along axis 0 into pieces of `rows` rows (views; `np.split` costs ~0.7 us a piece)."""
    array = np.asarray(array)
    ends = itertools.accumulate(rows)
    start, pieces = 0, []
    for end in ends:
        pieces.append(array[start:end])
        start = end
    return pieces


def split(output: Any, rows: list[int]) -> list[Any]:
    """Each request's rows of a batched output (an array, or a tuple/list of arrays)."""
    if isinstance(output, (tuple, list)):
        return list(zip(*(_cut(o, rows) for o in output), strict=True))
    return _cut(output, rows)


class _Request:
    """A queued request (a slotted class: made once per request on the hot path)."""

    __slots__ = ("request_id", "payload", "scheduled_ns", "enqueued_ns", "deadline_ns", "on_done", "key",
                 "length", "bucket", "probe")

    def __init__(self, request_id: int, payload: dict[str, np.ndarray], scheduled_ns: int, enqueued_ns: int,
                 deadline_ns: int | None, on_done: Callable[[Reply], None], key: Any = None):
        self.request_id, self.payload, self.scheduled_ns = request_id, payload, scheduled_ns
        self.enqueued_ns, self.deadline_ns, self.on_done, self.key = enqueued_ns, deadline_ns, on_done, key
        self.length = self.bucket = 0
        self.probe = False


@dataclass
class Server:
    """Serve `model` (a Candidate or any `predict(batch)` callable) with `policy` on `workers` threads.

    Use as a context manager (`with Server(candidate) as server: server.submit(...)`), or call
    `start()` and `stop()`. `cache` (a `ResultCache`) answers repeated request keys without the model;
    `preprocess` runs on each request in the worker before batching (where a feature cache sits).
    `prepare` takes the place of both preprocessing and batching when requests arrive raw (bodies):
    `prepare(payloads) -> (batch, rows, errors)` makes the model batch of a whole batch at once,
    with each request's row count and `{position: message}` for payloads it could not use, which are
    answered "error" while the rest are served."""

    model: Any
    policy: Policy = field(default_factory=DynamicBatching)
    workers: int = 1
    threads_per_worker: int = 1
    admission: Admission = field(default_factory=Admission)
    oversubscribe: str = "refuse"  # or "clamp"
    cores: int | None = None
    cache: Any = None
    preprocess: Callable[[dict], dict] | None = None
    prepare: Callable[[list[Any]], tuple[dict[str, np.ndarray], list[int], dict[int, str]]] | None = None

    def __post_init__(self):
        self._predict = getattr(self.model, "predict", self.model)
        if not callable(self._predict):
            raise TypeError(f"Server needs a Candidate or a callable predict(batch), got {type(self.model).__name__}")
        self.cores = int(self.cores or available_cores())
        self.threads_per_worker, self.notes = plan_threads(self.workers, self.threads_per_worker, self.cores,
                                                           self.oversubscribe)
        meta_threads = getattr(self.model, "meta", {}).get("threads") if hasattr(self.model, "meta") else None
        if meta_threads and self.workers * int(meta_threads) > self.cores:
            self.notes.append(f"the candidate's own session uses {meta_threads} threads: {self.workers} workers x "
                              f"{meta_threads} > {self.cores} cores; rebuild it with threads={self.threads_per_worker}")
        self._bucketed = isinstance(self.policy, BucketedBatching)
        if self._bucketed:  # before any work: a graph with a fixed sequence length cannot take trimmed batches
            refuse_fixed_length(self.model, self.policy)
        if self.prepare is not None and (self._bucketed or self.preprocess is not None):
            raise ValueError("prepare makes whole batches from raw payloads: it cannot be combined with preprocess "
                             "or bucketed batching; pass one of them")
        self._queue = BucketQueue(len(self.policy.edges) + 1) if self._bucketed else FifoQueue()
        self._cond = threading.Condition()
        self._idle = 0  # workers waiting for a first request
        self._needs: list[int] = []  # requests each batch-filling worker still waits for
        self._need = _NEVER
        self._threads: list[threading.Thread] = []
        self._running = False
        self._counts = [0] * len(STATUS)
        self._count_lock = threading.Lock()
        admission = self.admission
        self._estimate = ServiceEstimate(admission.estimate_half_life_s, admission.shed_half_life,
                                         admission.probe_every_ms)
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self._stack = contextlib.ExitStack()

    @property
    def name(self) -> str:
        return f"{self.policy.name} x{self.workers}"

    # ---- life cycle ----------------------------------------------------------------------
    def start(self) -> "Server":
        if self._running:
            return self
        self._stack.enter_context(torch_threads(self.threads_per_worker))
        self._running = True
        self._threads = [threading.Thread(target=self._work, name=f"optlab-worker-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the workers (each finishes its current call) and answer what is still queued "timeout"."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        now = time.monotonic_ns()
        for request in left:
            self._reply(request, TIMEOUT, now, now, 0)
        self._stack.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- requests ------------------------------------------------------------------------
    def submit(self, payload: dict[str, np.ndarray], request_id: int = 0, *, scheduled_ns: int | None = None,
               on_done: Callable[[Reply], None] | None = None, key: Any = None) -> None:
        """Queue one request. `scheduled_ns` (default: now) is when the client meant to send it: its
        deadline counts from there. `key` names the request for the result cache."""
        now = time.monotonic_ns()
        scheduled_ns = now if scheduled_ns is None else scheduled_ns
        deadline_ms = self.admission.deadline_ms
        deadline_ns = None if deadline_ms is None else scheduled_ns + int(deadline_ms * 1e6)
        request = _Request(request_id, payload, scheduled_ns, now, deadline_ns, on_done or _ignore, key)
        if self.cache is not None and key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._reply(request, OK, now, time.monotonic_ns(), 0, hit)
                return
        if self._bucketed:
            try:
                request.length = request_length(payload, self.policy.length_key)
            except ValueError as exc:  # answered like a failing model call: the server goes on
                self._reply(request, ERROR, now, time.monotonic_ns(), 0, error=str(exc))
                return
            request.bucket = self.policy.bucket(request.length)
        with self._cond:
            queued = len(self._queue)
            if not self._running:
                status = TIMEOUT
            elif queued >= self.admission.queue_limit:
                status = SHED_QUEUE_FULL
            elif deadline_ns is not None and not self._admit_by_deadline(request, queued + 1, now):
                status = SHED_DEADLINE
            else:
                self._queue.append(request)
                if self._idle or len(self._queue) >= self._need:
                    self._cond.notify()
                return
        self._reply(request, status, now, now, 0)

    def shed_if_late(self, request_id: int, scheduled_ns: int, on_done: Callable[[Reply], None] | None = None) -> bool:
        """Shed (answer `shed_deadline`, counted) a request that cannot make its deadline even if served
        alone at once, before the caller spends work decoding it; False when it still can. A caller
        that decodes requests itself asks this first: after a stall, requests already late are dropped
        for a few microseconds each instead of a decode each, so the backlog clears instead of making
        the next requests late too."""
        deadline_ms = self.admission.deadline_ms
        if deadline_ms is None:
            return False
        now = time.monotonic_ns()
        if now + self._estimate.ns(1, now) <= scheduled_ns + int(deadline_ms * 1e6):
            return False
        self._estimate.shed += 1
        self._reply(_Request(request_id, None, scheduled_ns, now, None, on_done or _ignore), SHED_DEADLINE, now, now, 0)
        return True

    def _admit_by_deadline(self, request: _Request, position: int, now: int) -> bool:
        """Whether a request at `position` in the queue can still make its deadline, or goes as a
        probe: nothing was admitted for a while and the queue is empty, so it is served at once and
        its call refreshes the estimate. Counts what it sheds."""
        estimate = self._estimate
        if now + self._expected_wait_ns(position, now) <= request.deadline_ns:
            estimate.admitted(now)
            return True
        if position == 1 and estimate.probe_due(now):
            request.probe = True
            return True
        estimate.shed += 1
        return False

    def _expected_wait_ns(self, position: int, now: int) -> float:
        """Time until a request at `position` in the queue is answered, from the measured call time of
        the batch it will likely join (optimistic: calls under way are not counted, so only
        surely-late requests are shed)."""
        max_batch = self.policy.max_batch
        per_round = max_batch * self.workers
        batch = min(max_batch, -(-position // self.workers))
        return -(-position // per_round) * self._estimate.ns(batch, now)

    def stats(self) -> dict[str, Any]:
        """Counts by status plus the admission controller's state: probes let through, requests shed
        by deadline, and the current service-time estimate (ms) by batch size."""
        estimate, counts = self._estimate, self.counts()
        with self._cond:  # read as submit and the workers change it
            queued = len(self._queue)
        return {**counts, "shed": counts["shed_queue_full"] + counts["shed_deadline"],
                "probes": estimate.probes, "queue_length": queued,
                "service_estimate_ms": estimate.by_batch_size(time.monotonic_ns())}

    def counts(self) -> dict[str, int]:
        with self._count_lock:
            return dict(zip(STATUS, self._counts, strict=True))

    def batch_size_histogram(self) -> dict[int, int]:
        """Model calls by number of requests in the call."""
        with self._count_lock:
            return dict(sorted(self._batch_sizes.items()))

    # ---- workers -------------------------------------------------------------------------
    def _reply(self, request: _Request, status: int, start_ns: int, done_ns: int, batch_size: int,
               output: Any = None, error: str | None = None) -> None:
        with self._count_lock:
            self._counts[status] += 1
        request.on_done(Reply(request.request_id, status, start_ns, done_ns, batch_size, output, error))

    def _take_batch(self) -> list[_Request] | None:
        max_batch, max_wait_ns = self.policy.max_batch, int(self.policy.max_wait_ms * 1e6)
        with self._cond:
            while not self._queue:
                if not self._running:
                    return None
                self._idle += 1
                try:
                    self._cond.wait(0.1)
                finally:
                    self._idle -= 1
            batch = [self._queue.popleft()]
            flush_at = batch[0].enqueued_ns + max_wait_ns
            while len(batch) < max_batch:
                following = self._queue.pop_next(batch[0])  # bucketed: from the first request's bucket only
                if following is not None:
                    batch.append(following)
                    continue
                remaining = flush_at - time.monotonic_ns()
                if remaining <= 0 or not self._running:
                    break
                self._wait_for(max_batch - len(batch), remaining)
        return batch

    def _wait_for(self, need: int, timeout_ns: int) -> None:
        """Wait (holding the condition) until `need` more requests are queued or the batch's flush
        time. Submitters wake a filling worker only then, not per request: a wake-up per request
        (a thread switch and an interpreter-lock hand-over each) cost more than the model call."""
        self._needs.append(need)
        self._need = min(self._needs)
        try:
            self._cond.wait(timeout_ns / 1e9)
        finally:
            self._needs.remove(need)
            self._need = min(self._needs, default=_NEVER)

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            start = time.monotonic_ns()
            live = self._still_in_time(batch, start)
            if live:
                self._serve(live, start)

    def _still_in_time(self, batch: list[_Request], start: int) -> list[_Request]:
        """The requests of `batch` that can still make their deadline (and probes); the rest are
        shed now. Shedding here also fades the estimate, so this check cannot lock the server out."""
        if all(r.deadline_ns is None for r in batch):
            return batch
        expected = start + self._estimate.ns(len(batch), start)
        keep = [r.deadline_ns is None or r.probe or expected <= r.deadline_ns for r in batch]
        for request, kept in zip(batch, keep, strict=True):
            if not kept:
                self._estimate.shed += 1
                self._reply(request, SHED_DEADLINE, start, start, 0)
        return [request for request, kept in zip(batch, keep, strict=True) if kept]

    def _batched(self, batch: list[_Request]) -> list[Any]:
        """Each request's output: payloads (preprocessed in the worker if asked) in one model call."""
        payloads = [r.payload for r in batch]
        if self.preprocess is not None:
            payloads = [self.preprocess(p) for p in payloads]
        if len(payloads) == 1 and not self._bucketed:
            return [self._predict(payloads[0])]
        merged, rows = concat(payloads)
        if self._bucketed:
            width = self.policy.width(batch[0].bucket, max(r.length for r in batch))
            merged = fit_width(merged, self.policy.length_key, width)
        return split(self._predict(merged), rows)

    def _prepared(self, batch: list[_Request], start: int) -> tuple[list[_Request], dict[str, np.ndarray], list[int]]:
        """Raw payloads made into one model batch by `prepare`; the ones it could not use are answered
        "error" now, and the rest are returned with the batch and their row counts."""
        merged, rows, errors = self.prepare([r.payload for r in batch])
        if errors:
            now = time.monotonic_ns()
            for i, message in errors.items():
                self._reply(batch[i], ERROR, start, now, 0, error=message)
            batch = [r for i, r in enumerate(batch) if i not in errors]
        return batch, merged, rows

    def _serve(self, batch: list[_Request], start: int) -> None:
        try:
            if self.prepare is not None:
                batch, merged, rows = self._prepared(batch, start)
                if not batch:
                    return
                outputs = split(self._predict(merged), rows)
            else:
                outputs = self._batched(batch)
        except Exception as exc:  # noqa: BLE001 - a failing model answers its requests "error"; the server goes on
            done = time.monotonic_ns()
            message = f"{type(exc).__name__}: {exc}"
            for request in batch:
                self._reply(request, ERROR, start, done, len(batch), error=message)
            return
        done = time.monotonic_ns()
        self._estimate.observe(len(batch), done - start, done)
        with self._count_lock:
            self._batch_sizes[len(batch)] += 1
        for request, output in zip(batch, outputs, strict=True):
            if self.cache is not None and request.key is not None:
                self.cache.put(request.key, output)
            self._reply(request, OK, start, done, len(batch), output)


def _ignore(_reply: Reply) -> None:
    return None
