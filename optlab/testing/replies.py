"""Serve a list of requests through anything with `submit(payload, request_id, on_done=)` and collect
every reply by request id (a list each, so a request answered twice shows as two replies)."""
from __future__ import annotations

import threading
import time
from typing import Any, Sequence


def serve_all(target: Any, payloads: Sequence[Any], timeout_s: float) -> dict[int, list[Any]]:
    """Start `target` (a context manager), submit every payload with its index as request id, wait up to
    `timeout_s` for one reply each, stop it; returns the replies by request id."""
    replies: dict[int, list[Any]] = {}
    lock = threading.Lock()

    def on_done(reply):
        with lock:
            replies.setdefault(reply.request_id, []).append(reply)
    with target:
        for i, payload in enumerate(payloads):
            target.submit(payload, i, on_done=on_done)
        deadline = time.monotonic() + timeout_s
        while len(replies) < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.005)
    return replies
