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
error. In its own process it runs on one of `SERVERS` (`spec["server"]`): "uvicorn", `spec["processes"]`
processes sharing the one listening socket (the kernel spreads connections over them), or "granian"
(a Rust HTTP server, its own `--workers` processes, binding the port itself), both measured by the
rtb bench. `app_from_env` is granian's factory (the spec's path in `OPTLAB_HTTP_SPEC`).

The client side (`HttpTarget` for `loadgen.run`, `post`) lives in `optlab.serving.http_client`
and is named here too; the lean path (a raw ASGI app around an event-loop micro-batcher) in
`optlab.serving.lean_app`.
"""
from __future__ import annotations

import asyncio
import collections
import http.client
import importlib
import json
import os
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

from optlab.serving.codecs import MAX_BODY_BYTES, BadRequest, Codec
from optlab.serving.http_client import HOST, HttpTarget, post  # noqa: F401 - named here for callers
from optlab.serving.lean_app import StageClock
from optlab.serving.server import ERROR, OK, Reply

SERVERS = ("uvicorn", "granian")
SPEC_ENV = "OPTLAB_HTTP_SPEC"


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

    clock = StageClock()

    def handler(payload: Codec):
        async def score(request):
            marks = request.scope.get("optlab.marks", [])  # the timed wrapper's entry time, then ours
            marks.append(time.perf_counter_ns())
            try:
                body = await _read_body(request, max_body_bytes)
                marks.append(time.perf_counter_ns())
                message = payload.decode(body)
                marks.append(time.perf_counter_ns())
                features = prepare(message)
                marks.append(time.perf_counter_ns())
            except BadRequest as exc:
                counts[f"bad_{exc.status}"] += 1
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            reply = await _submit(server, features, request.headers.get("x-scheduled-ns"))
            marks.append(time.perf_counter_ns())
            counts[reply.status_name] += 1
            headers = {"x-batch-size": str(reply.batch_size)}
            if reply.status == OK:
                encoded = payload.encode(answer(message, reply))
                marks.append(time.perf_counter_ns())
                return Response(encoded, media_type=payload.content_type, headers=headers)
            code = 500 if reply.status == ERROR else 503
            return JSONResponse({"error": reply.error or reply.status_name}, status_code=code, headers=headers)

        return score

    async def constant_endpoint(request):
        await request.body()
        counts["constant"] += 1
        return constant

    async def health(request):
        return JSONResponse({"ok": True, "deployment": name, "pid": os.getpid()})

    async def stats_endpoint(request):
        return JSONResponse({"pid": os.getpid(), "counts": dict(counts), "server": server.counts(),
                             "batches": {str(k): v for k, v in server.batch_size_histogram().items()},
                             "stages": clock.snapshot(), **(stats() if stats else {})})

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
    return _timed(application, clock, counts)


def _timed(application, clock: StageClock, counts):
    """`application` with the time of entry and of the response sent around it (`StageClock`): the
    framework's own share is what lies between those and the handler's stages."""
    async def timed(scope, receive, send) -> None:
        if scope["type"] != "http":
            return await application(scope, receive, send)
        scope["optlab.marks"] = marks = [time.perf_counter_ns()]
        await application(scope, receive, send)
        marks.append(time.perf_counter_ns())
        clock.add(marks)

    timed.state, timed.counts, timed.clock = application.state, counts, clock
    return timed


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
    """A running service: `url`, `port`, `stop()`; a context manager. `processes`: how many
    processes serve it (each answers `/stats` for itself; `get("/stats")` merges them all)."""

    port: int
    mode: str
    _stop: Any = field(repr=False)
    processes: int = 1

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
        """The JSON answer to `GET path`; for `/stats` of a service on several processes, every
        process's answer merged (`merge_stats`): each new connection reaches one process, so ask
        until each has answered."""
        if path != "/stats" or self.processes == 1:
            return self._get(path, timeout_s)
        seen: dict[int, dict] = {}
        for _ in range(50 * self.processes):
            answer = self._get(path, timeout_s)
            seen[answer.get("pid", 0)] = answer
            if len(seen) >= self.processes:
                break
        if len(seen) < self.processes:
            raise ServiceError(f"only {len(seen)} of {self.processes} processes on {HOST}:{self.port} answered /stats")
        return merge_stats(list(seen.values()))

    def _get(self, path: str, timeout_s: float) -> dict:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout_s)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()


def merge_stats(answers: list[dict]) -> dict:
    """Several processes' `/stats` as one service's: counts, sums and CPU seconds added, lists
    (samples) joined, rates (a key with "rate" in it) averaged, anything else the first one's."""
    merged: dict = {}
    for key in dict.fromkeys(k for answer in answers for k in answer):
        values = [answer[key] for answer in answers if key in answer]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if all(isinstance(v, dict) for v in values):
            merged[key] = merge_stats(values)
        elif all(isinstance(v, list) for v in values):
            merged[key] = [item for v in values for item in v]
        elif numbers and len(numbers) == len(values) and key != "pid":
            merged[key] = sum(numbers) / len(numbers) if "rate" in key else sum(numbers)
        elif "rate" in key and numbers:
            merged[key] = sum(numbers) / len(numbers)  # a process with no rate yet (null) does not count
        else:
            merged[key] = values[0]
    return merged


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


def _stopper(processes: list[subprocess.Popen], folder: Path) -> Callable[[], None]:
    def stop() -> None:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
        shutil.rmtree(folder, ignore_errors=True)
    return stop


def _launch(spec: dict, sock: socket.socket, port: int, spec_path: Path, log) -> list[subprocess.Popen]:
    """The service's processes on `spec["server"]` (see the module's docstring)."""
    server, count = spec.get("server", "uvicorn"), int(spec.get("processes", 1))
    if server not in SERVERS or count < 1:
        raise ValueError(f"spec: server must be one of {', '.join(SERVERS)} and processes >= 1, got {server!r}, "
                         f"{count!r}")
    if server == "uvicorn":
        return [subprocess.Popen([sys.executable, "-m", "optlab.serving.http", str(spec_path), str(sock.fileno())],
                                 pass_fds=(sock.fileno(),), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                for _ in range(count)]
    sock.close()  # granian binds the port itself: free it (loopback, just chosen by the OS)
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port),
               "--workers", str(count), "--runtime-mode", "st", "--runtime-threads", "1", "--loop", "asyncio",
               "--no-ws", "--log-level", "warning", "--backlog", "2048", "--factory",
               "optlab.serving.http:app_from_env"]
    return [subprocess.Popen(command, env={**os.environ, SPEC_ENV: str(spec_path)}, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, start_new_session=False)]


def _start_process(spec: dict, sock: socket.socket, port: int, startup_s: float) -> Service:
    folder = Path(tempfile.mkdtemp(prefix="optlab-http-"))
    spec_path, log_path = folder / "spec.json", folder / "stderr.txt"
    spec_path.write_text(json.dumps(spec, default=str))
    with log_path.open("wb") as log:
        processes = _launch(spec, sock, port, spec_path, log)
    stop, expected = _stopper(processes, folder), int(spec.get("processes", 1))
    try:
        deadline = time.monotonic() + startup_s
        _wait_healthy(port, deadline, lambda: all(p.poll() is None for p in processes))
        if expected > 1:  # every process loads its own model: wait until all can answer
            _wait_all(processes, expected, port, deadline)
    except ServiceError as exc:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        stop()
        raise ServiceError(f"{exc}: {' | '.join(tail) or 'no output'}") from None
    return Service(port, "process", stop, expected)


def _wait_all(processes: list[subprocess.Popen], expected: int, port: int, deadline: float) -> None:
    """Until `/health` was answered by `expected` distinct processes (each answer names its process
    id), so no load reaches a process still loading its model."""
    seen: set[int] = set()
    while len(seen) < expected and time.monotonic() < deadline:
        if not all(p.poll() is None for p in processes):
            raise ServiceError(f"a service process on {HOST}:{port} exited during startup")
        connection = http.client.HTTPConnection(HOST, port, timeout=1.0)
        try:
            connection.request("GET", "/health")
            seen.add(int(json.loads(connection.getresponse().read()).get("pid", 0)))
        except (OSError, ValueError, http.client.HTTPException):
            time.sleep(0.05)
        finally:
            connection.close()
    if len(seen) < expected:
        raise ServiceError(f"only {len(seen)} of {expected} service processes on {HOST}:{port} answered in time")


def build(spec: dict):
    """The application `spec["factory"]` ("module:function") builds from `spec`, in this process."""
    module, _, function = spec["factory"].partition(":")
    return getattr(importlib.import_module(module), function)(spec)


def app_from_env():
    """granian's factory: the application of the spec whose path is in `OPTLAB_HTTP_SPEC`."""
    return build(json.loads(Path(os.environ[SPEC_ENV]).read_text()))


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
