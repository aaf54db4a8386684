"""Routing by request kind: one front that sends each request to the route its kind names.

The agency's case: short classification requests and generation requests arrive mixed. Served by one
large language model, every request pays for the large model; a router sends classification to a small
classifier (a batch `Server`) and generation to the language model (`generation.service.GenerationService`).
`KindRouter` is that front, and serves either deployment: its routes map a kind to a target and to the
payload of the request that target reads (a `MixedRequest` carries one payload per form, e.g. the
classifier's token ids and the language model's).

Accounting: every request gets exactly one `Reply`, from the route its kind names, and `Reply.stage`
says which (the load generator keeps it per request, so p99 per route comes from the same run); a
request of a kind with no route is answered "error" by the front, naming the kinds it has. Targets
shared by several routes are started and stopped once. `BusyClock` adds up the time a route's model
spends in its calls (core-seconds on one thread), for cost per request by route.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

from optlab.instruments.latency import torch_threads
from optlab.serving.server import ERROR, STATUS, Reply

FRONT = "router"


@dataclass(frozen=True)
class MixedRequest:
    """One request of a mixed trace: its `kind`, its payloads by form, and its label where known."""

    kind: str
    payloads: Mapping[str, Any]
    label: int | None = None


@dataclass(frozen=True)
class Route:
    """Where a kind goes: `target` (anything with start/stop/submit) and the payload form it reads."""

    target: Any
    payload: str


class _Policies(NamedTuple):
    name: str


class BusyClock:
    """Time spent inside a model's calls or an engine's steps (ns, summed; thread-safe)."""

    def __init__(self):
        self.busy_ns = 0
        self._lock = threading.Lock()

    def _add(self, ns: int) -> None:
        with self._lock:
            self.busy_ns += ns

    def model(self, predict: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """`predict` timed (give the result to a `Server` as its model)."""
        def timed(batch):
            start = time.perf_counter_ns()
            try:
                return predict(batch)
            finally:
                self._add(time.perf_counter_ns() - start)
        return timed

    def engine(self, engine: Any) -> "_TimedEngine":
        """`engine` with its `add` and `step` timed (give it to a `GenerationService`)."""
        return _TimedEngine(engine, self)


@dataclass
class _TimedEngine:
    inner: Any
    clock: BusyClock

    def add(self, *args, **kwargs):
        start = time.perf_counter_ns()
        try:
            return self.inner.add(*args, **kwargs)
        finally:
            self.clock._add(time.perf_counter_ns() - start)  # noqa: SLF001 - the clock's own helper

    def step(self):
        start = time.perf_counter_ns()
        try:
            return self.inner.step()
        finally:
            self.clock._add(time.perf_counter_ns() - start)  # noqa: SLF001

    def has_work(self) -> bool:
        return self.inner.has_work()

    def __getattr__(self, name):
        return getattr(self.inner, name)


@dataclass
class KindRouter:
    """Send each `MixedRequest` to `routes[request.kind]` (see the module). `threads`: torch's intra-op
    threads while it runs (one per process; put back on stop); `label` names the deployment."""

    routes: Mapping[str, Route]
    label: str = "router"
    threads: int = 1
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.routes:
            raise ValueError("KindRouter needs at least one route, e.g. {'classify': Route(server, 'classifier')}")
        for kind, route in self.routes.items():
            if not isinstance(route, Route) or not callable(getattr(route.target, "submit", None)):
                raise TypeError(f"route {kind!r} must be a Route(target, payload) whose target has submit(); "
                                f"got {route!r}")
        self.name = self.label
        self.policy = _Policies(" | ".join(f"{kind}: {getattr(r.target, 'name', type(r.target).__name__)}"
                                           for kind, r in self.routes.items()))
        self.workers, self.threads_per_worker = len(self._targets()), self.threads
        self._lock = threading.Lock()
        self._counts = {(kind, status): 0 for kind in (*self.routes, FRONT) for status in range(len(STATUS))}
        self._stack = contextlib.ExitStack()

    def _targets(self) -> list[Any]:
        seen: dict[int, Any] = {}
        for route in self.routes.values():
            seen.setdefault(id(route.target), route.target)
        return list(seen.values())

    def start(self) -> "KindRouter":
        self._stack.close()
        self._stack.enter_context(torch_threads(self.threads))
        for target in self._targets():
            target.start()
            self._stack.callback(target.stop)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every target (in the reverse order they started) and put torch's threads back."""
        self._stack.close()
        self.notes.extend(note for target in self._targets() for note in getattr(target, "notes", ())
                          if note not in self.notes)

    def __enter__(self) -> "KindRouter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def submit(self, request: MixedRequest, request_id: int = 0, *, scheduled_ns: int | None = None,
               on_done: Callable[[Reply], None] | None = None, key: Any = None) -> None:
        client = on_done or _ignore
        route = self.routes.get(getattr(request, "kind", None))
        if route is None or route.payload not in request.payloads:
            now = time.monotonic_ns()
            why = (f"no route for kind {getattr(request, 'kind', None)!r}; this router has {', '.join(self.routes)}"
                   if route is None else f"the {request.kind!r} route reads payload {route.payload!r}, which this "
                   f"request lacks (it has {', '.join(request.payloads)})")
            self._answer(client, Reply(request_id, ERROR, now, now, 0, error=why), FRONT)
            return
        kind = request.kind
        route.target.submit(request.payloads[route.payload], request_id, scheduled_ns=scheduled_ns,
                            on_done=lambda reply: self._answer(client, reply, kind))

    def _answer(self, client: Callable[[Reply], None], reply: Reply, kind: str) -> None:
        with self._lock:
            self._counts[kind, reply.status] += 1
        client(reply._replace(stage=kind))

    def stats(self) -> dict[str, Any]:
        """Replies by route and status (`classify_ok`, `router_error`, ...) and the targets' probes."""
        with self._lock:
            counts = {f"{kind}_{STATUS[status]}": n for (kind, status), n in self._counts.items()}
        probes = sum(int(t.stats().get("probes", 0)) for t in self._targets() if callable(getattr(t, "stats", None)))
        return {**counts, "probes": probes}


def _ignore(_reply: Reply) -> None:
    return None
