"""A real HTTP service on 127.0.0.1 (uvicorn + Starlette) around a `Deployment`, and its client.

Routes (one service, side by side):
* `POST /bid` with a JSON body, `POST /bid.msgpack` with a msgpack body: the same bid request,
  decoded and preprocessed in the handler, scored through the serving subpackage's `Server`
  (batching, admission control), answered in the request's own format: `{"id", "logit", "pctr"}`.
* `POST /constant`: reads the body and returns a constant: the HTTP stack's own ceiling.
* `GET /health`, `GET /stats` (status counts, bad requests by code, the server's counts).

Bad input (not JSON/msgpack, missing field, wrong type, unknown publisher id, oversized body)
answers 4xx with a one-line message and is counted; a model error answers 500 only if the model
itself raised; a shed request answers 503. An `x-scheduled-ns` header (the client's
`time.monotonic_ns()` for when it meant to send; one clock for all processes on a machine) gives the
deadline its start, as in process.

`start(...)` runs the service in a background thread (any in-process candidate) or in its own
process (`python -m optlab.serving.http SPEC.json`: the candidate rebuilt from its `loader`),
on a loopback port chosen by the OS (the socket is bound before uvicorn starts, so no race);
startup is bounded, and a service that fails to start raises with its port and error.
`HttpTarget` is the client side for `loadgen.run`: a pool of keep-alive connections in threads.
"""
from __future__ import annotations

import asyncio
import collections
import http.client
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
from typing import Any

import msgpack
import numpy as np

from optlab.serving.deployments import MAX_BODY_BYTES, PAYLOADS, BadRequest, Deployment
from optlab.serving.server import ERROR, OK, SHED_DEADLINE, Reply

HOST = "127.0.0.1"
ROUTES = {"json": "/bid", "msgpack": "/bid.msgpack"}


# ---- the application ---------------------------------------------------------------------
def app(deployment: Deployment):
    """The Starlette application serving `deployment` (its server starts and stops with the app)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    server = deployment.server()
    counts: collections.Counter[str] = collections.Counter()
    constant = Response(b'{"ok":true}', media_type="application/json")

    async def read_body(request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            raise BadRequest(f"body of {declared} bytes is over the {MAX_BODY_BYTES}-byte limit; send one bid "
                             "request", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BadRequest(f"body is over the {MAX_BODY_BYTES}-byte limit; send one bid request", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    def handler(fmt: str):
        payload = PAYLOADS[fmt]

        async def score(request):
            try:
                body = await read_body(request)
                message = payload.decode(body)
                features = deployment.preprocess(message)
            except BadRequest as exc:
                counts[f"bad_{exc.status}"] += 1
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            loop = asyncio.get_running_loop()
            future = loop.create_future()

            def on_done(reply: Reply) -> None:
                loop.call_soon_threadsafe(_resolve, future, reply)

            scheduled = request.headers.get("x-scheduled-ns")
            server.submit(features, scheduled_ns=int(scheduled) if scheduled and scheduled.isdigit() else None,
                          on_done=on_done)
            reply = await future
            counts[reply.status_name] += 1
            headers = {"x-batch-size": str(reply.batch_size)}
            if reply.status == OK:
                logit = float(np.ravel(reply.output)[0])
                answer = {"id": str(message.get("id", "")), "logit": logit, "pctr": float(1 / (1 + np.exp(-logit)))}
                return Response(payload.encode(answer), media_type=payload.content_type, headers=headers)
            code = 500 if reply.status == ERROR else 503
            return JSONResponse({"error": reply.error or reply.status_name}, status_code=code, headers=headers)

        return score

    async def constant_endpoint(request):
        await request.body()
        counts["constant"] += 1
        return constant

    async def health(request):
        return JSONResponse({"ok": True, "deployment": deployment.name})

    async def stats(request):
        return JSONResponse({"counts": dict(counts), "server": server.counts(),
                             "batches": {str(k): v for k, v in server.batch_size_histogram().items()},
                             **deployment.feature_cache_stats()})

    @asynccontextmanager
    async def lifespan(_app):
        server.start()
        try:
            yield
        finally:
            server.stop()

    routes = [Route(ROUTES[fmt], handler(fmt), methods=["POST"]) for fmt in ROUTES]
    routes += [Route("/constant", constant_endpoint, methods=["POST"]), Route("/health", health),
               Route("/stats", stats)]
    application = Starlette(routes=routes, lifespan=lifespan)
    application.state.counts, application.state.server = counts, server
    return application


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


def start(deployment: Deployment | None = None, *, spec: dict | None = None, mode: str = "thread", port: int = 0,
          startup_s: float = 60.0) -> Service:
    """Serve `deployment` in a background thread (`mode="thread"`), or the deployment described by
    `spec` (see `deployment_spec`) in its own process (`mode="process"`), on 127.0.0.1."""
    if mode not in ("thread", "process"):
        raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
    sock = _listening_socket(port)
    port = sock.getsockname()[1]
    try:
        if mode == "thread":
            if deployment is None:
                raise ValueError("mode='thread' serves a Deployment: pass deployment=...")
            return _start_thread(deployment, sock, port, startup_s)
        if spec is None:
            raise ValueError("mode='process' rebuilds the deployment in the child: pass spec=deployment_spec(...)")
        return _start_process(spec, sock, port, startup_s)
    finally:
        sock.close()  # the thread's server or the child holds its own reference


def _start_thread(deployment: Deployment, sock: socket.socket, port: int, startup_s: float) -> Service:
    import uvicorn

    server = uvicorn.Server(_uvicorn_config(app(deployment)))
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


def deployment_spec(deployment: Deployment) -> dict:
    """What a child process needs to rebuild `deployment`: the candidate's loader and the config."""
    candidate = deployment.candidate
    if getattr(candidate, "loader", None) is None or getattr(candidate, "artifact_path", None) is None:
        raise ValueError(f"candidate {getattr(candidate, 'name', candidate)!r} has no loader/artifact to rebuild it "
                         "in another process; serve it with mode='thread'")
    return {"loader": candidate.loader, "artifact_path": str(candidate.artifact_path),
            "loader_options": {**candidate.loader_options, "threads": deployment.config.threads_per_worker},
            "name": candidate.name, "config": deployment.config.to_dict(),
            "schema": {"fields": deployment.schema.fields, "cardinalities": deployment.schema.cardinalities,
                       "numeric": deployment.schema.numeric}}


def _from_spec(spec: dict) -> Deployment:
    import importlib

    from optlab.models.candidate import Candidate
    from optlab.serving.deployments import BidSchema, DeploymentConfig

    module, _, function = spec["loader"].partition(":")
    predict = getattr(importlib.import_module(module), function)(spec["artifact_path"], **spec["loader_options"])
    candidate = Candidate(spec["name"], predict, artifact_path=Path(spec["artifact_path"]), loader=spec["loader"],
                          loader_options=spec["loader_options"])
    schema = BidSchema(**{k: tuple(v) for k, v in spec["schema"].items()})
    return Deployment(DeploymentConfig(**spec["config"]), candidate, schema)


def main(argv: list[str]) -> int:
    """The service's own process: `python -m optlab.serving.http SPEC.json FD`."""
    import signal

    import uvicorn

    spec_path, fd = argv
    if hasattr(signal, "SIGHUP"):  # die with the parent's session rather than linger
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    parent = os.getppid()
    deployment = _from_spec(json.loads(Path(spec_path).read_text()))
    server = uvicorn.Server(_uvicorn_config(app(deployment)))

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
