"""Batching across HTTP requests inside one event loop: concurrent requests, one model call.

A service process that answers each request with its own model call pays the call's fixed cost
(ONNX Runtime's dispatch, numpy's allocation) per request; a `Server` batches, but hands every
request to a worker thread and back to the event loop (two thread hand-offs per request, which
cost as much as a small model call). `MicroBatcher` gathers the requests that are in the loop at
the same time and scores them with one call, run in the loop itself (one intra-op thread per
process; the processes, one per core, give the parallelism):

- a request's features join the pending batch (`await batcher(features)`);
- the batch is scored when it holds `max_batch`, or, once the loop has run the callbacks that were
  ready (the requests that arrived in the same turn join first), when every request inside the
  service is waiting in it (nobody else can join, so waiting longer only adds latency: a lone
  request is scored at once), else `max_wait_ms` after that look, whichever comes first;
- each request gets exactly its own row of the output back (`split` by the rows it sent).

`enter()`/`leave()` count the requests inside the service (the app calls them), which is how the
batcher knows whether anyone else may still join. `for_sla` sizes the batch from the SLA: the
largest power of two whose measured call fits in a quarter of it, and a wait of a tenth of it.

With `deadline_ms`, a request already older than its deadline (from its scheduled time) when its
batch is scored is answered shed (503) instead of scored: the rule uses no estimate, so it cannot
lock itself into shedding everything.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optlab.serving.server import concat, split


class Shed(Exception):
    """The request was past its deadline when its batch was scored."""


@dataclass(frozen=True)
class BatchSizing:
    """`max_batch` and `max_wait_ms` for a model and an SLA, with the call times they came from."""

    max_batch: int
    max_wait_ms: float
    call_ms: dict[int, float]


def for_sla(predict: Callable, example: dict[str, np.ndarray], sla_ms: float, *, largest: int = 256,
            repeats: int = 20) -> BatchSizing:
    """The largest power-of-two batch (<= `largest`) whose median call on copies of `example` takes
    at most a quarter of `sla_ms`, and a wait of a tenth of `sla_ms` (a request can wait for its
    batch, then for the batch ahead of it, and still leave most of the SLA to the network)."""
    if not sla_ms > 0:
        raise ValueError(f"sla_ms must be > 0, got {sla_ms!r}")
    call_ms, size, best = {}, 1, 1
    while size <= largest:
        batch = concat([example] * size)[0]
        predict(batch)  # warm: a first call at a new shape allocates
        times = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            predict(batch)
            times.append(time.perf_counter_ns() - start)
        call_ms[size] = float(np.median(times)) / 1e6
        if call_ms[size] > sla_ms / 4:
            break
        best, size = size, size * 2
    return BatchSizing(best, sla_ms / 10, call_ms)


class MicroBatcher:
    """Gathers concurrent requests of one event loop into one `predict` call (see the module)."""

    def __init__(self, predict: Callable, *, max_batch: int = 64, max_wait_ms: float = 1.0,
                 deadline_ms: float | None = None):
        if int(max_batch) != max_batch or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.predict, self.max_batch, self.max_wait_s = predict, int(max_batch), max_wait_ms / 1e3
        self.deadline_ns = None if deadline_ms is None else int(deadline_ms * 1e6)
        self.calls, self.shed, self.inside = 0, 0, 0
        self.batch_sizes: Counter[int] = Counter()
        self._pending: list[tuple[dict, asyncio.Future, int | None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._check_soon = False

    def enter(self) -> None:
        """A request came into the service (it may join a batch)."""
        self.inside += 1

    def leave(self) -> None:
        """A request left without joining a batch, or got its answer."""
        self.inside -= 1
        if self._pending:
            self._soon()

    async def __call__(self, features: dict[str, np.ndarray],
                       scheduled_ns: int | None = None) -> tuple[Any, int, int]:
        """This request's own output, the size of the batch it was scored in and that call's
        nanoseconds; `Shed` when past its deadline at scoring time; the model's exception when the
        call fails."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((features, future, scheduled_ns))
        if len(self._pending) >= self.max_batch:
            self._flush()
        else:
            self._soon()
        return await future

    def _soon(self) -> None:
        """Look again once the loop has run what is ready now: requests that arrived in the same
        turn reach the batcher before it is scored."""
        if not self._check_soon:
            self._check_soon = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._check_soon = False
        if not self._pending:
            return
        if len(self._pending) >= min(self.max_batch, self.inside):
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        if self._pending:  # more than one batch was waiting: the rest are looked at next
            self._soon()
        if self.deadline_ns is not None:
            batch = self._drop_late(batch)
        if not batch:
            return
        try:
            inputs, rows = concat([features for features, _, _ in batch])
            start = time.perf_counter_ns()
            output = self.predict(inputs)
            took = time.perf_counter_ns() - start
            outputs = split(output, rows)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the model's error
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.calls += 1
        self.batch_sizes[len(batch)] += 1
        for (_, future, _), row in zip(batch, outputs, strict=True):
            if not future.done():
                future.set_result((row, len(batch), took))

    def _drop_late(self, batch: list) -> list:
        now, kept = time.monotonic_ns(), []
        for item in batch:
            scheduled = item[2]
            if scheduled is not None and now - scheduled > self.deadline_ns:
                self.shed += 1
                if not item[1].done():
                    item[1].set_exception(Shed())
            else:
                kept.append(item)
        return kept

    def stats(self) -> dict[str, Any]:
        """`ok`: requests scored (as a `Server` counts them), `calls`, `shed`, and calls per batch size."""
        return {"ok": sum(size * n for size, n in self.batch_sizes.items()), "calls": self.calls,
                "shed_deadline": self.shed, "batches": {str(k): v for k, v in self.batch_sizes.items()}}
