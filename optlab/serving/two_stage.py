"""Two-stage serving: a cheap server answers every request and forwards the unsure ones to an
expensive server, so a confident request never waits for an escalated neighbour's expensive call.

A cascade inside one `Server` (its model `optlab.models.cascade.Router`) batches requests together
and runs the expensive model on a batch's unsure rows before answering any of the batch: every
request of that batch waits for its slowest row. `TwoStage` runs two `Server`s instead. The cheap
stage's reply handler reads the cheap model's confidence per row (`models.cascade.confidence`): a
confident request is answered there and then; a request with unsure rows is submitted to the
expensive stage (those rows only, with the request's own scheduled time, so its deadline still counts
from the schedule) and answered when that stage replies, its confident rows kept from the cheap model.

The core budget is split explicitly: each stage is a `Stage` (policy, workers x threads per worker),
and the two stages' cores together must fit `cores` (default: this process's CPU affinity). torch's
intra-op thread count is one per process: while a two-stage server runs it is the expensive stage's
(give the cheap stage an ONNX Runtime session built with its own threads, as the bench does).

Accounting: every request gets exactly one `Reply`, and `Reply.stage` names the stage that gave it
("cheap" or "expensive"), also when that stage shed it or timed it out. `stats()` counts replies
by stage and status and the rows sent on. `TwoStage` has what `loadgen.run` uses (`start`, `stop`,
`submit`, `name`, `policy`, `workers`, `threads_per_worker`, `notes`, `stats`), so the same open-loop
generator and throughput-at-SLA search drive it as any server.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from optlab.data.datasets import trim_padding
from optlab.instruments.latency import torch_threads
from optlab.models.cascade import CONFIDENCES, escalated, merge
from optlab.models.cascade import confidence as row_confidence
from optlab.serving.policies import Admission, DynamicBatching, Policy
from optlab.serving.server import OK, STATUS, Reply, Server, available_cores

CHEAP, EXPENSIVE = "cheap", "expensive"
STAGES = (CHEAP, EXPENSIVE)


@dataclass(frozen=True)
class Stage:
    """One stage's share of the core budget (`workers` x `threads_per_worker`) and its batching policy."""

    policy: Policy = field(default_factory=DynamicBatching)
    workers: int = 1
    threads_per_worker: int = 1

    def __post_init__(self):
        for name in ("workers", "threads_per_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Stage.{name}={value!r} must be an integer >= 1, e.g. Stage(workers=1, "
                                 f"threads_per_worker=1)")

    @property
    def cores(self) -> int:
        return self.workers * self.threads_per_worker

    @property
    def name(self) -> str:
        return f"{self.policy.name} x{self.workers}w x{self.threads_per_worker}t"


class _Policies(NamedTuple):
    """What the load generator's summary calls a server's policy: both stages' names."""

    name: str


class TwoStage:
    """Serve `cheap` and `expensive` (Candidates or `predict(batch)` callables) as two stages; a
    request whose cheap outputs have a row with confidence below `threshold` goes on (see the module)."""

    def __init__(self, cheap: Any, expensive: Any, *, threshold: float, confidence: str = "top1",
                 decision: float = 0.5, cheap_stage: Stage = Stage(), expensive_stage: Stage = Stage(),
                 admission: Admission | None = None, cores: int | None = None):
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold={threshold!r} must be a confidence in [0, 1] (0 sends nothing on, 1 every "
                             f"request), e.g. the cascade candidate's meta['threshold']")
        self.cores = int(cores or available_cores())
        used = cheap_stage.cores + expensive_stage.cores
        if used > self.cores:
            raise ValueError(f"the stages need {cheap_stage.cores} + {expensive_stage.cores} = {used} cores (workers "
                             f"x threads per worker each) and the budget is {self.cores}: lower a stage's workers or "
                             f"threads, e.g. Stage(workers=1, threads_per_worker=1) for each on 2 cores")
        self.threshold, self.confidence, self.decision = float(threshold), confidence, float(decision)
        if confidence not in CONFIDENCES:
            raise ValueError(f"confidence={confidence!r} is not known; choose one of: {', '.join(CONFIDENCES)}")
        self.stages = {CHEAP: cheap_stage, EXPENSIVE: expensive_stage}
        self.servers = {name: Server(model, stage.policy, workers=stage.workers,
                                     threads_per_worker=stage.threads_per_worker, admission=admission or Admission(),
                                     cores=stage.cores)
                        for name, stage, model in ((CHEAP, cheap_stage, cheap),
                                                   (EXPENSIVE, expensive_stage, expensive))}
        self.name = f"two-stage({cheap_stage.cores}+{expensive_stage.cores} cores)"
        self.policy = _Policies(f"cheap {cheap_stage.policy.name} | expensive {expensive_stage.policy.name}")
        self.workers = cheap_stage.workers + expensive_stage.workers
        self.threads_per_worker = max(cheap_stage.threads_per_worker, expensive_stage.threads_per_worker)
        self.notes = [f"{name} stage: {note}" for name, server in self.servers.items() for note in server.notes]
        if cheap_stage.threads_per_worker != expensive_stage.threads_per_worker and "torch" in sys.modules:
            self.notes.append(f"torch's intra-op threads are one per process: torch calls in both stages run with "
                              f"{expensive_stage.threads_per_worker} (the expensive stage's)")
        self._lock = threading.Lock()
        self._by_stage = {(stage, status): 0 for stage in STAGES for status in range(len(STATUS))}
        self._sent_on = self._rows = self._rows_sent_on = 0
        self._stack = contextlib.ExitStack()
        self._started = False

    # ---- life cycle ----------------------------------------------------------------------
    def start(self) -> "TwoStage":
        if not self._started:  # the process's torch setting as found, put back by stop()
            self._stack.enter_context(torch_threads(self.stages[EXPENSIVE].threads_per_worker))
            self._started = True
        self.servers[CHEAP].start()
        self.servers[EXPENSIVE].start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the cheap stage first (its last escalations still reach a running expensive stage),
        then the expensive one; what either still queues is answered "timeout" by that stage."""
        self.servers[CHEAP].stop(timeout_s)
        self.servers[EXPENSIVE].stop(timeout_s)
        self._stack.close()
        self._started = False

    def __enter__(self) -> "TwoStage":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- requests ------------------------------------------------------------------------
    def submit(self, payload: dict[str, np.ndarray], request_id: int = 0, *, scheduled_ns: int | None = None,
               on_done: Callable[[Reply], None] | None = None, key: Any = None) -> None:
        """Queue one request at the cheap stage; its one reply comes from whichever stage answers it."""
        scheduled = time.monotonic_ns() if scheduled_ns is None else scheduled_ns
        client = on_done or _ignore

        def after_cheap(reply: Reply) -> None:
            if reply.status != OK:
                self._answer(client, reply, CHEAP)
                return
            first = np.asarray(reply.output)
            mask = escalated(row_confidence(first, self.confidence, self.decision), self.threshold)
            self._count_rows(len(mask), int(mask.sum()))
            if not mask.any():
                self._answer(client, reply, CHEAP)
                return
            rows = payload if mask.all() else trim_padding({name: value[mask] for name, value in payload.items()})

            def after_expensive(second: Reply) -> None:
                if second.status != OK:
                    self._answer(client, second, EXPENSIVE)
                    return
                output = np.asarray(second.output, dtype=first.dtype).reshape(first.shape) if mask.all() \
                    else merge(first, second.output, mask)
                self._answer(client, second._replace(output=output), EXPENSIVE)

            self.servers[EXPENSIVE].submit(rows, request_id, scheduled_ns=scheduled, on_done=after_expensive)

        self.servers[CHEAP].submit(payload, request_id, scheduled_ns=scheduled, on_done=after_cheap, key=key)

    def _answer(self, client: Callable[[Reply], None], reply: Reply, stage: str) -> None:
        with self._lock:
            self._by_stage[stage, reply.status] += 1
            if stage == EXPENSIVE:
                self._sent_on += 1
        client(reply._replace(stage=stage))

    def _count_rows(self, rows: int, sent: int) -> None:
        with self._lock:
            self._rows += rows
            self._rows_sent_on += sent

    # ---- figures -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Replies by stage and status (`cheap_ok`, `expensive_shed_deadline`, ...), requests and rows
        sent on, the share of the cheap stage's answered rows sent on, and the admission controllers'
        probes of both stages (the load generator's summary reads `probes`)."""
        with self._lock:
            by_stage = {f"{stage}_{STATUS[status]}": n for (stage, status), n in self._by_stage.items()}
            rows, sent_rows, sent = self._rows, self._rows_sent_on, self._sent_on
        stages = {name: server.stats() for name, server in self.servers.items()}
        return {**by_stage, "answered_by_cheap": sum(v for k, v in by_stage.items() if k.startswith(CHEAP)),
                "answered_by_expensive": sum(v for k, v in by_stage.items() if k.startswith(EXPENSIVE)),
                "requests_sent_on": sent, "rows_sent_on": sent_rows, "rows_seen_by_router": rows,
                "escalated_share": sent_rows / rows if rows else None,
                "probes": sum(int(s["probes"]) for s in stages.values()),
                "shed": sum(int(s["shed"]) for s in stages.values())}


def _ignore(_reply: Reply) -> None:
    return None
