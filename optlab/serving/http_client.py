"""optlab's own HTTP client for a service on 127.0.0.1: `HttpTarget` (what `loadgen.run` drives over
real sockets: a pool of keep-alive connections in threads) and `post` (one request, the answer
decoded). Python, so on a small machine it tops out at a few thousand requests a second: the
external clients (`optlab.serving.external_load`) measure past that.
"""
from __future__ import annotations

import collections
import http.client
import json
import queue
import socket
import threading
import time
from typing import Any

import msgpack

from optlab.serving.server import ERROR, OK, SHED_DEADLINE, Reply

HOST = "127.0.0.1"


class HttpTarget:
    """What `loadgen.run` drives over real sockets: `submit` queues the body, one of `connections`
    threads (each with a keep-alive connection) posts it to `path` and answers `on_done` with
    the status: 2xx ok, 4xx/500 error, 503 shed. Duck-types the parts of `Server` the generator uses."""

    def __init__(self, port: int, path: str, *, connections: int = 8, label: str = "http", timeout_s: float = 5.0,
                 content_type: str = "application/octet-stream"):
        from optlab.serving.policies import NoBatching

        self.port, self.path, self.connections, self.timeout_s = port, path, connections, timeout_s
        self.content_type = content_type
        self.policy, self.workers, self.threads_per_worker = NoBatching(), connections, 1
        self.name, self.notes = label, []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.status_codes: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    def start(self) -> "HttpTarget":
        if not self._threads:
            self._threads = [threading.Thread(target=self._work, daemon=True, name=f"optlab-http-client-{i}")
                             for i in range(self.connections)]
            for thread in self._threads:
                thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def submit(self, body: bytes, request_id: int = 0, *, scheduled_ns: int | None = None, on_done=None,
               key=None) -> None:
        self._queue.put((body, request_id, scheduled_ns or time.monotonic_ns(), on_done))

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _work(self) -> None:
        connection = None
        while True:
            item = self._queue.get()
            if item is None:
                break
            body, request_id, scheduled_ns, on_done = item
            start = time.monotonic_ns()
            try:
                connection = connection or self._connect()
                connection.request("POST", self.path, body, {"content-type": self.content_type,
                                                             "x-scheduled-ns": str(scheduled_ns)})
                response = connection.getresponse()
                answer = response.read()
                code = response.status
                batch = int(response.getheader("x-batch-size") or 1)
            except (OSError, http.client.HTTPException) as exc:
                if connection is not None:
                    connection.close()
                connection, code, batch, answer = None, 599, 0, str(exc).encode()
            done = time.monotonic_ns()
            with self._lock:
                self.status_codes[code] += 1
            status = OK if code < 300 else (SHED_DEADLINE if code == 503 else ERROR)
            if on_done is not None:
                on_done(Reply(request_id, status, start, done, batch, answer if code < 300 else None,
                              None if code < 300 else answer[:200].decode(errors="replace")))
        if connection is not None:
            connection.close()


def post(port: int, path: str, body: bytes, content_type: str = "application/json",
         timeout_s: float = 5.0) -> tuple[int, Any]:
    """One request: (status code, decoded answer: msgpack for msgpack routes, else JSON)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        connection.request("POST", path, body, {"content-type": content_type})
        response = connection.getresponse()
        raw = response.read()
        kind = response.getheader("content-type") or ""
        return response.status, (msgpack.unpackb(raw) if "msgpack" in kind else json.loads(raw))
    finally:
        connection.close()


