"""A real HTTP service on 127.0.0.1 (uvicorn + Starlette) around a `Server`, and its client.

`app(server, routes, prepare=, answer=)` is the application factory: each POST route has its codec
(`codecs.CODECS`: JSON, msgpack), `prepare` turns a decoded request into the server's input (or
refuses it with `BadRequest`: a counted 4xx with a one-line message), `answer` turns a served reply
into the response object. A shed request answers 503, a model error 500. Every app also has
`POST /constant` (reads the body, returns a constant: the HTTP stack's own cost), `GET /health` and
`GET /stats`. An `x-scheduled-ns` header (the client's `time.monotonic_ns()` for when it meant to
send; one clock for all processes on a machine) gives the deadline its start, as in process.

`start(...)` runs an application in a background thread, or in its own process
(`python -m optlab.serving.http SPEC.json FD`: the application rebuilt by the spec's `factory`,
a "module:function" name), on a loopback port chosen by the OS (the socket is bound before uvicorn
starts, so no race); startup is bounded, and a service that fails to start raises with its port and
error. `HttpTarget` is the client side for `loadgen.run`: a pool of keep-alive connections in threads.
"""
from __future__ import annotations

import asyncio
import collections
import http.client
import importlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import msgpack

from optlab.serving.codecs import MAX_BODY_BYTES, BadRequest, Codec
from optlab.serving.server import ERROR, OK, SHED_DEADLINE, Reply

HOST = "127.0.0.1"


# ---- the application ---------------------------------------------------------------------
def app(server, routes: Mapping[str, Codec], *, prepare: Callable[[Any], Any], answer: Callable[[Any, Reply], Any],
        name: str = "service", stats: Callable[[], dict] | None = None, max_body_bytes: int = MAX_BODY_BYTES):
    """A Starlette application around `server` (started and stopped with the app).

    `routes` maps a POST path to the codec its bodies use; per request the handler decodes the body,
    calls `prepare(message)` for the server's input (raise `BadRequest` to refuse it: a counted 4xx),
    submits it, and encodes `answer(message, reply)` for a served reply (503 for shed, 500 for a model
    error). `/constant` answers without any work (the HTTP stack's own cost), `/health` names the
    service, `/stats` counts statuses and adds `stats()`."""
    from contextlib import asynccontextmanager  # starlette is imported only where a service runs

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    counts: collections.Counter[str] = collections.Counter()
    constant = Response(b'{"ok":true}', media_type="application/json")

    def handler(payload: Codec):
        async def score(request):
            try:
                message = payload.decode(await _read_body(request, max_body_bytes))
                features = prepare(message)
            except BadRequest as exc:
                counts[f"bad_{exc.status}"] += 1
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            reply = await _submit(server, features, request.headers.get("x-scheduled-ns"))
            counts[reply.status_name] += 1
            headers = {"x-batch-size": str(reply.batch_size)}
            if reply.status == OK:
                return Response(payload.encode(answer(message, reply)), media_type=payload.content_type,
                                headers=headers)
            code = 500 if reply.status == ERROR else 503
            return JSONResponse({"error": reply.error or reply.status_name}, status_code=code, headers=headers)

        return score

    async def constant_endpoint(request):
        await request.body()
        counts["constant"] += 1
        return constant

    async def health(request):
        return JSONResponse({"ok": True, "deployment": name})

    async def stats_endpoint(request):
        return JSONResponse({"counts": dict(counts), "server": server.counts(),
                             "batches": {str(k): v for k, v in server.batch_size_histogram().items()},
                             **(stats() if stats else {})})

    @asynccontextmanager
    async def lifespan(_app):
        server.start()
        try:
            yield
        finally:
            server.stop()

    routes_ = [Route(path, handler(payload), methods=["POST"]) for path, payload in routes.items()]
    routes_ += [Route("/constant", constant_endpoint, methods=["POST"]), Route("/health", health),
                Route("/stats", stats_endpoint)]
    application = Starlette(routes=routes_, lifespan=lifespan)
    application.state.counts, application.state.server = counts, server
    return application


async def _read_body(request, max_body_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
        raise BadRequest(f"body of {declared} bytes is over the {max_body_bytes}-byte limit; send one request", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise BadRequest(f"body is over the {max_body_bytes}-byte limit; send one request", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _submit(server, features, scheduled: str | None) -> Reply:
    """Hand `features` to the server's threads and wait for its reply without blocking the loop."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def on_done(reply: Reply) -> None:
        loop.call_soon_threadsafe(_resolve, future, reply)

    server.submit(features, scheduled_ns=int(scheduled) if scheduled and scheduled.isdigit() else None,
                  on_done=on_done)
    return await future


def _resolve(future: asyncio.Future, reply: Reply) -> None:
    if not future.done():
        future.set_result(reply)


# ---- running it ----------------------------------------------------------------------------
class ServiceError(RuntimeError):
    """The service did not start (its port and error in the message)."""


@dataclass
class Service:
    """A running service: `url`, `port`, `stop()`; a context manager."""

    port: int
    mode: str
    _stop: Any = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        self._stop()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def get(self, path: str, timeout_s: float = 5.0) -> dict:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout_s)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()


def _listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {HOST}:{port}: {exc}; pass port=0 for a free one") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(application, fd: int | None = None):
    import uvicorn

    http_impl = "httptools"
    try:
        import httptools  # noqa: F401
    except ImportError:
        http_impl = "h11"
    return uvicorn.Config(application, fd=fd, log_level="warning", access_log=False, http=http_impl,
                          lifespan="on", loop="asyncio", timeout_graceful_shutdown=2)


def _wait_healthy(port: int, deadline: float, alive) -> None:
    error = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise ServiceError(f"the service on {HOST}:{port} exited during startup")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=0.5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError as exc:
            error = str(exc)
        time.sleep(0.05)
    raise ServiceError(f"the service on {HOST}:{port} did not answer /health in time ({error})")


def start(application=None, *, spec: dict | None = None, mode: str = "thread", port: int = 0,
          startup_s: float = 60.0) -> Service:
    """Serve an ASGI `application` in a background thread (`mode="thread"`), or the application that
    `spec["factory"]` ("module:function", called with `spec`) builds in its own process
    (`mode="process"`), on 127.0.0.1."""
    if mode not in ("thread", "process"):
        raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
    if mode == "thread" and not callable(application):
        raise ValueError(f"mode='thread' serves an ASGI application, got {type(application).__name__}: pass "
                         "app(server, routes, ...) (a case's own service module starts its deployments)")
    if mode == "process" and not (spec and isinstance(spec.get("factory"), str) and ":" in spec["factory"]):
        raise ValueError("mode='process' rebuilds the application in the child: pass spec={'factory': "
                         "'module:function', ...}")
    sock = _listening_socket(port)
    port = sock.getsockname()[1]
    try:
        if mode == "thread":
            return _start_thread(application, sock, port, startup_s)
        return _start_process(spec, sock, port, startup_s)
    finally:
        sock.close()  # the thread's server or the child holds its own reference


def _start_thread(application, sock: socket.socket, port: int, startup_s: float) -> Service:
    import uvicorn

    server = uvicorn.Server(_uvicorn_config(application))
    listener = socket.socket(fileno=os.dup(sock.fileno()))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[listener])
        except BaseException as exc:  # noqa: BLE001 - reported by start() with the port
            failure.append(exc)
        finally:
            listener.close()

    thread = threading.Thread(target=run, name=f"optlab-http-{port}", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(10.0)

    try:
        _wait_healthy(port, time.monotonic() + startup_s, thread.is_alive)
    except ServiceError as exc:
        stop()
        raise ServiceError(f"{exc}: {failure[0]!r}" if failure else str(exc)) from None
    return Service(port, "thread", stop)


def _start_process(spec: dict, sock: socket.socket, port: int, startup_s: float) -> Service:
    folder = Path(tempfile.mkdtemp(prefix="optlab-http-"))
    spec_path, log_path = folder / "spec.json", folder / "stderr.txt"
    spec_path.write_text(json.dumps(spec, default=str))
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "optlab.serving.http", str(spec_path), str(sock.fileno())],
                               pass_fds=(sock.fileno(),), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
        shutil.rmtree(folder, ignore_errors=True)

    try:
        _wait_healthy(port, time.monotonic() + startup_s, lambda: process.poll() is None)
    except ServiceError as exc:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        stop()
        raise ServiceError(f"{exc}: {' | '.join(tail) or 'no output'}") from None
    return Service(port, "process", stop)


def build(spec: dict):
    """The application `spec["factory"]` ("module:function") builds from `spec`, in this process."""
    module, _, function = spec["factory"].partition(":")
    return getattr(importlib.import_module(module), function)(spec)


def main(argv: list[str]) -> int:
    """The service's own process: `python -m optlab.serving.http SPEC.json FD`."""
    import signal

    import uvicorn

    spec_path, fd = argv
    if hasattr(signal, "SIGHUP"):  # die with the parent's session rather than linger
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    parent = os.getppid()
    server = uvicorn.Server(_uvicorn_config(build(json.loads(Path(spec_path).read_text()))))

    def watch_parent() -> None:  # the service never outlives the process that started it
        while not server.should_exit:
            if os.getppid() != parent:
                server.should_exit = True
            time.sleep(0.5)

    threading.Thread(target=watch_parent, daemon=True, name="optlab-parent-watch").start()
    server.run(sockets=[socket.socket(fileno=int(fd))])
    return 0


# ---- the client side ---------------------------------------------------------------------
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
