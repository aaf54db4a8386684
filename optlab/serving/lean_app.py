"""The lean HTTP path: a raw ASGI application around a `MicroBatcher`, and the clock of where a
request's time goes inside a service.

`lean_app(batcher, routes, prepare=, answer=)` serves the same routes, codecs and hooks as
`optlab.serving.http.app` (the Starlette app) with no framework in between: one function reads the
path, the body, decodes, prepares, awaits the batcher (concurrent requests share one model call in
the event loop, no thread hand-off) and sends the encoded answer. Bad input is a counted 4xx with
the hook's message, a request past its deadline a 503, a model error a 500; `/constant`, `/health`
and `/stats` are there as in the Starlette app.

`StageClock` sums the time of each stage of every scored request, in both apps, from eight
timestamps: entry into the ASGI app, the handler's start (the framework's routing and request
object in between), the body read, decoded, prepared, the model's answer, the response encoded,
the response sent. `/stats` returns the sums and the count, so a client takes the difference
around its own run; what the client measured beyond the app's total is the HTTP server's parsing
and the sockets (`breakdown`).
"""
from __future__ import annotations

import collections
import json
import os
import time
from typing import Any, Callable, Mapping

from optlab.serving.codecs import MAX_BODY_BYTES, BadRequest, Codec
from optlab.serving.microbatch import MicroBatcher, Shed
from optlab.serving.server import OK, Reply

STAGES = ("framework_in", "read_body", "decode", "preprocess", "model", "respond", "framework_out")


class StageClock:
    """Summed nanoseconds per stage over the scored requests (`add` takes eight timestamps)."""

    def __init__(self):
        self.sums = dict.fromkeys(STAGES, 0)
        self.count = 0

    def add(self, marks: list[int]) -> None:
        if len(marks) != len(STAGES) + 1:
            return  # a request that did not reach every stage (refused, shed) is not a scored request
        for stage, start, end in zip(STAGES, marks, marks[1:], strict=False):
            self.sums[stage] += end - start
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count, "sums_ns": dict(self.sums)}


def breakdown(before: dict, after: dict, client_mean_ms: float) -> dict[str, float]:
    """Mean microseconds per stage between two `/stats` `stages` snapshots, plus `http_and_socket_us`:
    the client's mean latency beyond the app's own total (the server's HTTP parsing, the sockets
    and the client). NaN when no request was scored in between."""
    count = after["count"] - before["count"]
    if count <= 0:
        return {**{f"{stage}_us": float("nan") for stage in STAGES}, "http_and_socket_us": float("nan"),
                "requests": 0}
    means = {f"{stage}_us": (after["sums_ns"][stage] - before["sums_ns"][stage]) / count / 1e3 for stage in STAGES}
    inside = sum(means.values())
    return {**means, "in_app_us": inside, "http_and_socket_us": client_mean_ms * 1e3 - inside,
            "client_mean_us": client_mean_ms * 1e3, "requests": count}


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def read_body(scope, receive, max_body_bytes: int) -> bytes:
    """The whole request body, or `BadRequest` (413) past `max_body_bytes`."""
    declared = _header(scope, b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
        raise BadRequest(f"body of {declared.decode(errors='replace')} bytes is over the {max_body_bytes}-byte "
                         "limit; send one request", 413)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise BadRequest(f"body is over the {max_body_bytes}-byte limit; send one request", 413)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _send(send, status: int, body: bytes, content_type: bytes, extra=()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, obj: Any) -> None:
    await _send(send, status, json.dumps(obj).encode(), b"application/json")


async def lifespan(receive, send, on_start: Callable[[], None] | None = None,
                   on_stop: Callable[[], None] | None = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_start is not None:
                on_start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_stop is not None:
                on_stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


def lean_app(batcher: MicroBatcher, routes: Mapping[str, Codec], *, prepare: Callable[[Any], Any],
             answer: Callable[[Any, Reply], Any], name: str = "service", stats: Callable[[], dict] | None = None,
             max_body_bytes: int = MAX_BODY_BYTES):
    """A raw ASGI application scoring `routes` through `batcher` (see the module's docstring)."""
    counts: collections.Counter[str] = collections.Counter()
    clock = StageClock()
    constant = b'{"ok":true}'

    async def score(scope, receive, send, payload: Codec, marks: list[int]) -> None:
        batcher.enter()
        try:
            body = await read_body(scope, receive, max_body_bytes)
            marks.append(time.perf_counter_ns())
            message = payload.decode(body)
            marks.append(time.perf_counter_ns())
            features = prepare(message)
            marks.append(time.perf_counter_ns())
        except BadRequest as exc:
            batcher.leave()
            counts[f"bad_{exc.status}"] += 1
            return await _send_json(send, exc.status, {"error": str(exc)})
        scheduled = _header(scope, b"x-scheduled-ns")
        try:
            output, size, took = await batcher(features, int(scheduled) if scheduled and scheduled.isdigit() else None)
        except Shed:
            counts["shed_deadline"] += 1
            return await _send_json(send, 503, {"error": "shed_deadline"})
        except Exception as exc:  # noqa: BLE001 - a model error is this request's 500, the service goes on
            counts["error"] += 1
            return await _send_json(send, 500, {"error": f"{type(exc).__name__}: {exc}"[:200]})
        finally:
            batcher.leave()
        marks.append(time.perf_counter_ns())
        counts["ok"] += 1
        # the reply's span is the model call's own (not the wait for the batch), as a Server reports it
        encoded = payload.encode(answer(message, Reply(0, OK, marks[5] - took, marks[5], size, output)))
        marks.append(time.perf_counter_ns())
        await _send(send, 200, encoded, payload.content_type.encode(), ((b"x-batch-size", str(size).encode()),))

    async def application(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":
            return None
        marks = [time.perf_counter_ns()]
        path = scope["path"]
        payload = routes.get(path)
        if payload is not None and scope["method"] == "POST":
            marks.append(marks[0])  # no framework between the server and the handler
            await score(scope, receive, send, payload, marks)
            marks.append(time.perf_counter_ns())
            return clock.add(marks)
        if path == "/constant":
            await read_body(scope, receive, max_body_bytes)
            counts["constant"] += 1
            return await _send(send, 200, constant, b"application/json")
        if path == "/health":
            return await _send_json(send, 200, {"ok": True, "deployment": name, "pid": os.getpid()})
        if path == "/stats":
            return await _send_json(send, 200, {"pid": os.getpid(), "counts": dict(counts), "server": batcher.stats(),
                                                "stages": clock.snapshot(), **(stats() if stats else {})})
        return await _send_json(send, 404, {"error": f"no route {path}; POST to one of {', '.join(routes)}"})

    application.counts, application.clock, application.batcher = counts, clock, batcher
    return application
