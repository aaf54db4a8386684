"""A service that answers every POST with the same small JSON body: the HTTP stack with no model.

What a load client reaches against it is that client's (and this machine's HTTP stack's) own
ceiling: the headroom that any HTTP figure measured with the same client must stay well below.
It is a raw ASGI app (no framework) served by uvicorn in its own process, so the client and the
service never share one interpreter lock. `python -m optlab.serving.constant_service FD` serves
on an inherited listening socket; `start_constant()` starts one on a free port of 127.0.0.1.
"""
from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

HOST = "127.0.0.1"
BODY = b'{"id":"0","logit":0.0,"pctr":0.5}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send) -> None:
    """Any path: read the request body to its end, answer 200 with `BODY`."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


@dataclass
class ConstantService:
    """A running constant service: `url(path)` and `stop()` (also a context manager)."""

    port: int
    process: subprocess.Popen

    def url(self, path: str = "/constant") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)

    def __enter__(self) -> "ConstantService":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_constant(startup_s: float = 30.0) -> ConstantService:
    """Start the constant service in its own process on a free port of 127.0.0.1; waits until it answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    try:
        process = subprocess.Popen([sys.executable, "-m", "optlab.serving.constant_service", str(sock.fileno())],
                                   pass_fds=(sock.fileno(),), stdin=subprocess.DEVNULL)
    finally:
        sock.close()  # the child holds its own copy
    service = ConstantService(port, process)
    deadline, error = time.monotonic() + startup_s, "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the constant service exited during startup (code {process.returncode})")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=0.5)
            connection.request("POST", "/constant", body=b"{}")
            if connection.getresponse().status == 200:
                connection.close()
                return service
        except OSError as exc:
            error = str(exc)
        time.sleep(0.05)
    service.stop()
    raise RuntimeError(f"the constant service on {HOST}:{port} did not answer in {startup_s:g} s ({error})")


def main(argv: list[str]) -> int:
    import uvicorn  # only the child process needs the server

    try:
        import httptools  # noqa: F401 - the faster parser when installed
        http_impl = "httptools"
    except ImportError:
        http_impl = "h11"
    config = uvicorn.Config(app, log_level="warning", access_log=False, http=http_impl, lifespan="on",
                            loop="asyncio")
    # socket(fileno=...) reads the inherited socket's real family (AF_INET): uvicorn's own `fd=` path
    # labels it AF_UNIX, and asyncio then leaves Nagle on, which costs a delayed ACK (~40 ms) per answer
    listener = socket.socket(fileno=int(argv[0]))
    uvicorn.Server(config).run(sockets=[listener])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
