"""Load from compiled HTTP clients, Debian's `wrk` and `hey`, driven and parsed by optlab.

optlab's own HTTP client is Python: on a small machine it tops out at a few thousand requests a
second, below what a lean service answers, so an HTTP ceiling measured with it is the client's.
`external_load(ExternalLoad(url=..., body=...))` runs one of the compiled tools against a URL and
returns an `ExternalResult`: a one-row summary (requests, ok, non-2xx, achieved rate, p50/p90/p99
in ms) and a frame (wrk: its latency percentiles; hey: one row per request).

Both tools are closed loops: each connection sends its next request when the previous answer is
in, so their latency counts from the *send*, not from a schedule, and a slow answer delays the
requests behind it (coordinated omission). The rows say so (`loop`, `latency_from`). `hey` can
pace each connection (`-q` per worker, so `rate_per_s / connections` each): a fixed offered rate
while the service keeps up, still closed per connection. `wrk` runs flat out on its connections.

Varied bodies (a service's feature cache must see what optlab's generator sends, not one request
repeated): `wrk` cycles through `bodies` per request from a Lua script, so the flat-out runs (the
throughput at the SLA, the HTTP ratio targets) send all of them. `hey` reads one body file per run,
so a paced `hey` run with several bodies is several hey processes *at once*, one per body (at most
one per connection), the connections and the rate split between them: the same total offered rate
over the same connections, `min(len(bodies), connections)` distinct bodies (`bodies` in the summary).

The tools come from apt (`python dev.py setup` installs them as root; else
`sudo apt-get install -y wrk hey`). `missing_tools()` says which are absent.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from optlab.serving.constant_service import start_constant

TOOLS = ("wrk", "hey")
INSTALL = "sudo apt-get update && sudo apt-get install -y wrk hey (or as root: python dev.py setup)"
_MARK = "OPTLAB_JSON "
_PERCENTILES = (50, 75, 90, 95, 99, 99.9)


@dataclass(frozen=True)
class ExternalLoad:
    """One run of an external client: `tool` ("wrk" or "hey") against `url` for `duration_s` on
    `connections` keep-alive connections, sending `body` with `method`, or varied `bodies` (wrk cycles
    through them per request; hey runs one process per body at once, see the module's docstring).
    `rate_per_s` (hey only) paces the run at that total rate, split evenly over the connections;
    None runs flat out."""

    url: str
    body: bytes = b""
    bodies: tuple[bytes, ...] = ()
    tool: str = "wrk"
    connections: int = 8
    duration_s: int = 2
    threads: int = 1
    rate_per_s: float | None = None
    method: str = "POST"
    content_type: str = "application/json"
    timeout_s: int = 5

    def __post_init__(self):
        if self.tool not in TOOLS:
            raise ValueError(f"unknown external load tool {self.tool!r}; use one of {', '.join(TOOLS)}")
        if not str(self.url).startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if int(self.duration_s) != self.duration_s or self.duration_s < 1:
            raise ValueError(f"duration_s must be a whole number of seconds >= 1 (wrk counts whole seconds), "
                             f"got {self.duration_s!r}")
        if not (1 <= self.threads <= self.connections):
            raise ValueError(f"need 1 <= threads <= connections, got threads={self.threads}, "
                             f"connections={self.connections}")
        if self.rate_per_s is not None and (self.tool != "hey" or not self.rate_per_s > 0):
            raise ValueError(f"rate_per_s={self.rate_per_s!r}: a fixed rate needs tool='hey' and a rate > 0 "
                             "(wrk only runs flat out)")
        if not isinstance(self.body, bytes) or not all(isinstance(b, bytes) for b in self.bodies):
            raise ValueError("body and bodies must be bytes (the exact request bodies)")
        object.__setattr__(self, "bodies", tuple(self.bodies))

    @property
    def name(self) -> str:
        rate = "" if self.rate_per_s is None else f", {self.rate_per_s:g}/s"
        return f"{self.tool}({self.connections} connections{rate})"


@dataclass
class ExternalResult:
    """`summary`: one flat row (units in the names); `frame`: wrk's percentiles or hey's requests."""

    summary: dict[str, Any]
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([self.summary])


def missing_tools(tools: tuple[str, ...] = TOOLS) -> list[str]:
    """The external clients not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def external_load(load: ExternalLoad) -> ExternalResult:
    """Run `load` with its tool and parse what it printed; a clear error when the tool is absent."""
    if shutil.which(load.tool) is None:
        raise FileNotFoundError(f"{load.tool} is not installed; install it: {INSTALL}")
    with tempfile.TemporaryDirectory(prefix="optlab-external-") as folder:
        return _RUNNERS[load.tool](load, Path(folder))


def _run(command: list[str], limit_s: float) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{command[0]} failed (exit {done.returncode}): {tail or 'no output'}")
    return done.stdout


def _lua_string(text: str) -> str:
    return json.dumps(text)  # JSON's escapes are valid in a Lua string literal


def _wrk_script(load: ExternalLoad, body_paths: list[Path]) -> str:
    """Lua for wrk: the method, bodies (cycled per request when there are several) and content
    type, and a `done()` that prints the counts and latency percentiles (microseconds) as one JSON line."""
    percentiles = ", ".join(f"{p:g}" for p in _PERCENTILES)
    paths = ", ".join(_lua_string(str(path)) for path in body_paths)
    return f"""
local bodies = {{}}
for _, path in ipairs({{{paths}}}) do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
wrk.method = {_lua_string(load.method)}
wrk.body = bodies[1]
wrk.headers["Content-Type"] = {_lua_string(load.content_type)}
if #bodies > 1 then
  local i = 0
  request = function()
    i = i % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[i])
  end
end
done = function(summary, latency, requests)
  local ps = {{}}
  for _, p in ipairs({{{percentiles}}}) do
    ps[#ps + 1] = string.format('"%g": %d', p, latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format('{_MARK}{{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "min_us": %d, "max_us": %d, "mean_us": %.3f, '
    .. '"stdev_us": %.3f, "percentiles_us": {{%s}}}}\\n', summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, latency.min, latency.max, latency.mean, latency.stdev,
    table.concat(ps, ", ")))
end
"""


def _wrk(load: ExternalLoad, folder: Path) -> ExternalResult:
    script = folder / "post.lua"
    body_paths = []
    for i, body in enumerate(load.bodies or (load.body,)):
        body_paths.append(folder / f"body{i}.bin")
        body_paths[-1].write_bytes(body)
    script.write_text(_wrk_script(load, body_paths))
    out = _run(["wrk", "-t", str(load.threads), "-c", str(load.connections), "-d", f"{int(load.duration_s)}s",
                "--timeout", f"{int(load.timeout_s)}s", "--latency", "-s", str(script), load.url],
               load.duration_s + load.timeout_s + 30)
    line = next((x for x in out.splitlines() if x.startswith(_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary from its done() hook; its output: {out.strip()[-300:]}")
    raw = json.loads(line[len(_MARK):])
    percentiles = {float(p): us / 1e3 for p, us in raw["percentiles_us"].items()}
    frame = pd.DataFrame({"percentile": list(percentiles), "latency_ms": list(percentiles.values())})
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    duration_s = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status"]
    summary = _summary(load, requests=raw["requests"], ok=ok, non_2xx=raw["status"], socket_errors=socket_errors,
                       duration_s=duration_s, percentile_ms=percentiles.get,
                       mean_ms=raw["mean_us"] / 1e3, max_ms=raw["max_us"] / 1e3)
    notes = [] if not raw["status"] else [f"{raw['status']} answers were not 2xx/3xx (503 = shed): not in ok"]
    return ExternalResult(summary, frame, notes)


def _hey_groups(load: ExternalLoad) -> list[tuple[bytes, int, float | None]]:
    """(body, connections, rate) per hey process: one process per body (at most one per connection),
    the connections split as evenly as they go and the rate in proportion to them."""
    bodies = load.bodies or (load.body,)
    count = min(len(bodies), load.connections)
    share = [load.connections // count + (i < load.connections % count) for i in range(count)]
    return [(bodies[i], share[i], None if load.rate_per_s is None else load.rate_per_s * share[i] / load.connections)
            for i in range(count)]


def _hey_command(load: ExternalLoad, body_path: Path, connections: int, rate: float | None) -> list[str]:
    command = ["hey", "-z", f"{int(load.duration_s)}s", "-c", str(connections), "-m", load.method,
               "-T", load.content_type, "-D", str(body_path), "-t", str(int(load.timeout_s)), "-o", "csv"]
    if rate is not None:
        command += ["-q", f"{rate / connections:.6g}"]  # -q is per worker (connection)
    return command + [load.url]


def _hey_frames(load: ExternalLoad, folder: Path) -> list[pd.DataFrame]:
    """Run one hey process per body group at once and read each one's per-request CSV."""
    processes = []
    for i, (body, connections, rate) in enumerate(_hey_groups(load)):
        body_path = folder / f"body{i}.bin"
        body_path.write_bytes(body)
        out = (folder / f"out{i}.csv").open("wb")
        process = subprocess.Popen(_hey_command(load, body_path, connections, rate), stdout=out,
                                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        processes.append((process, out, folder / f"out{i}.csv"))
    frames, limit = [], load.duration_s + load.timeout_s + 30
    for process, out, path in processes:
        try:
            _, err = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        out.close()
        if process.returncode != 0:
            tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
            raise RuntimeError(f"hey failed (exit {process.returncode}): {tail or 'no output'}")
        frames.append(pd.read_csv(path))
    return frames


def _hey(load: ExternalLoad, folder: Path) -> ExternalResult:
    frames = _hey_frames(load, folder)
    frame = pd.concat(frames, ignore_index=True)
    frame = pd.DataFrame({"offset_s": frame["offset"].astype(float),
                          "latency_ms": frame["response-time"].astype(float) * 1e3,
                          "status_code": frame["status-code"].astype(int)})
    ok = frame["status_code"].between(200, 399)
    duration_s = float((frame["offset_s"] + frame["latency_ms"] / 1e3).max()) if len(frame) else float(load.duration_s)
    latency = frame.loc[ok, "latency_ms"].to_numpy()
    summary = _summary(load, requests=len(frame), ok=int(ok.sum()), non_2xx=int((~ok).sum()), socket_errors=None,
                       duration_s=duration_s, percentile_ms=lambda p: _quantile(latency, p),
                       mean_ms=float(latency.mean()) if len(latency) else math.nan,
                       max_ms=float(latency.max()) if len(latency) else math.nan)
    summary["bodies"] = len(frames)
    notes = ["hey's per-request output leaves out requests that failed at the socket: socket_errors not counted"]
    if len(frames) > 1:
        notes.append(f"{len(frames)} hey processes at once, one body each (hey sends one body per run)")
    return ExternalResult(summary, frame, notes)


def _quantile(values: np.ndarray, percentile: float) -> float:
    return float(np.quantile(values, percentile / 100)) if len(values) else math.nan


def _summary(load: ExternalLoad, *, requests: int, ok: int, non_2xx: int, socket_errors: int | None,
             duration_s: float, percentile_ms: Callable[[float], float | None], mean_ms: float,
             max_ms: float) -> dict[str, Any]:
    def pick(p: float) -> float:
        value = percentile_ms(p)
        return math.nan if value is None else float(value)
    paced = load.rate_per_s is not None
    return {
        "tool": load.tool, "url": load.url, "connections": load.connections, "threads": load.threads,
        "loop": "closed, paced per connection" if paced else "closed",
        "latency_from": "send (closed loop: not from a schedule)",
        "offered_per_s": float(load.rate_per_s) if paced else math.nan,
        "duration_s": float(duration_s), "requests": int(requests), "ok": int(ok), "non_2xx": int(non_2xx),
        "socket_errors": socket_errors, "bodies": len(load.bodies or (load.body,)),
        "achieved_per_s": ok / duration_s if duration_s > 0 else math.nan,
        "p50_ms": pick(50), "p90_ms": pick(90), "p99_ms": pick(99), "mean_ms": float(mean_ms),
        "max_ms": float(max_ms),
    }


_RUNNERS: dict[str, Callable[[ExternalLoad, Path], ExternalResult]] = {"wrk": _wrk, "hey": _hey}


def client_headroom(tool: str = "wrk", *, connections: int = 8, duration_s: int = 2,
                    body: bytes = b"{}") -> ExternalResult:
    """What `tool` reaches against the constant service (no model, same HTTP stack): the client's
    headroom, to print before any HTTP figure measured with it. Figures above half of it carry
    the client's (and the stack's) own limit."""
    with start_constant() as service:
        return external_load(ExternalLoad(url=service.url(), body=body, tool=tool, connections=connections,
                                          duration_s=duration_s))


def closed_loop_at_sla(url: str, bodies: tuple[bytes, ...], *, max_p99_ms: float = 10.0,
                       connections: tuple[int, ...] = (1, 2, 4, 8, 16, 32), duration_s: int = 2,
                       content_type: str = "application/json") -> tuple[dict[str, Any], pd.DataFrame]:
    """wrk on more and more connections (closed loop) until p99 passes `max_p99_ms` or answers
    fail: the highest rate served with p99 <= `max_p99_ms` and no non-2xx answers, and the curve.
    A closed loop's latency counts from the send, so this is the rate at a p99 *from the send*;
    the best row has `sla_met` False (and rate 0) when not even one connection passes."""
    rows = []
    for count in connections:
        result = external_load(ExternalLoad(url=url, bodies=tuple(bodies), tool="wrk", connections=count,
                                            duration_s=duration_s, content_type=content_type))
        passed = bool(result.summary["p99_ms"] <= max_p99_ms and result.summary["non_2xx"] == 0
                      and not result.summary["socket_errors"])
        rows.append({**result.summary, "passed": passed})
        if not passed:
            break
    curve = pd.DataFrame(rows)
    good = curve[curve["passed"]]
    if good.empty:
        return {**rows[0], "achieved_per_s": 0.0, "sla_met": False}, curve
    return {**good.sort_values("achieved_per_s").iloc[-1].to_dict(), "sla_met": True}, curve
