"""The load generator's own process: sends request ids at their scheduled times over a socket.

Run as `python -m optlab.serving.generator_child FD SCHEDULE CONCURRENCY MAX_COUNT MAX_DURATION_NS CPU`
by `optlab.serving.loadgen` (stdlib only, so it starts in ~50 ms). It keeps its own interpreter lock
away from the server's and, where the machine has more than one core, sits on a core of its own.

Protocol on a SOCK_SEQPACKET socket (one message per send): child -> parent `READY`, then `<qqq`
records (request id, scheduled and actual send monotonic ns; several per message when several are
due), and `<qqq` (-1, requests sent, 0) at the end. Parent -> child: first `<q` t0 (monotonic ns of
the run's start), then `S` to stop early, `B` after the last message, and in a closed loop `<q`
with the id of each answered request. An open loop never waits for answers: a request that is late
to leave keeps its scheduled time, so the generator cannot hide queueing (coordinated omission).
"""
from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time
from array import array

SEND = struct.Struct("<qqq")
_POLL_EVERY = 64
MAX_PER_MESSAGE = 64


def _read_schedule(path: str) -> array:
    offsets = array("q")
    with open(path, "rb") as handle:
        offsets.frombytes(handle.read())
    return offsets


def _open_loop(sock: socket.socket, t0: int, offsets: array, end_ns: int) -> int:
    """Send each request at its time; requests already due when the generator wakes go in one message
    (up to `MAX_PER_MESSAGE`), each with its own scheduled time, so a fast rate costs fewer syscalls."""
    clock, pack, send = time.monotonic_ns, SEND.pack, sock.send
    n, i, messages = len(offsets), 0, 0
    while i < n:
        target = t0 + offsets[i]
        if target > end_ns:
            break
        now = clock()
        while target > now:  # wait for the send time, waking at once for a stop message
            ready, _, _ = select.select([sock], [], [], (target - now) / 1e9)
            if ready and _stopped(sock):
                return i
            now = clock()
        messages += 1
        if messages % _POLL_EVERY == 0 and select.select([sock], [], [], 0)[0] and _stopped(sock):
            return i
        j, parts = i, []
        while j < n and j - i < MAX_PER_MESSAGE and t0 + offsets[j] <= now and t0 + offsets[j] <= end_ns:
            parts.append(pack(j, t0 + offsets[j], now))
            j += 1
        send(b"".join(parts))
        i = j
    return i


def _closed_loop(sock: socket.socket, t0: int, concurrency: int, max_count: int, end_ns: int) -> int:
    clock, pack, send = time.monotonic_ns, SEND.pack, sock.send
    sent = 0
    if t0 > clock():
        time.sleep((t0 - clock()) / 1e9)
    for _ in range(min(concurrency, max_count)):
        now = clock()
        send(pack(sent, now, now))
        sent += 1
    while sent < max_count:
        now = clock()
        if now >= end_ns:
            break
        ready, _, _ = select.select([sock], [], [], min((end_ns - now) / 1e9, 0.1))
        if not ready:
            continue
        message = sock.recv(65536)
        if not message or message == b"S":
            break
        for _ in range(len(message) // 8):
            if sent >= max_count:
                break
            now = clock()
            send(pack(sent, now, now))
            sent += 1
    return sent


def _await_goodbye(sock: socket.socket, timeout_s: float = 5.0) -> None:
    """Read what the parent still sends until its `B` (or its close): closing a socket with unread
    messages would reset the parent's end before it reads our last message."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        ready, _, _ = select.select([sock], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            return
        try:
            message = sock.recv(65536)
        except OSError:
            return
        if not message or message == b"B":
            return


def _stopped(sock: socket.socket) -> bool:
    message = sock.recv(65536)
    return not message or message == b"S"


def main(argv: list[str]) -> int:
    fd, schedule, concurrency, max_count, max_duration_ns, cpu = argv
    sock = socket.socket(fileno=int(fd))
    if int(cpu) >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})
    offsets = _read_schedule(schedule) if schedule != "-" else array("q")
    sock.send(b"READY")
    (t0,) = struct.unpack("<q", sock.recv(64)[:8])
    end_ns = t0 + int(max_duration_ns)
    if int(concurrency) > 0:
        sent = _closed_loop(sock, t0, int(concurrency), int(max_count), end_ns)
    else:
        sent = _open_loop(sock, t0, offsets, end_ns)
    sock.send(SEND.pack(-1, sent, 0))
    _await_goodbye(sock)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
