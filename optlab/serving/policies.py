"""Batching policies and admission control: small frozen dataclasses, looked up by name.

A policy says how a worker forms a batch from the queue: `max_batch` requests at most, waiting at
most `max_wait_ms` after the first one arrived for more to come. "none" is one request at a time,
"static" waits for a full batch (flushing a partial one after `flush_ms` so a run always ends),
"dynamic" is Triton's dynamic batcher (`max_batch_size`, `max_queue_delay`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import ClassVar


@dataclass(frozen=True)
class NoBatching:
    """One request per model call."""

    kind: ClassVar[str] = "none"

    @property
    def max_batch(self) -> int:
        return 1

    @property
    def max_wait_ms(self) -> float:
        return 0.0

    @property
    def name(self) -> str:
        return "none"


@dataclass(frozen=True)
class StaticBatching:
    """A fixed batch of `batch_size` requests; a partial batch leaves after `flush_ms`."""

    batch_size: int = 8
    flush_ms: float = 100.0
    kind: ClassVar[str] = "static"

    def __post_init__(self):
        _check(self.batch_size, self.flush_ms, "StaticBatching(batch_size=..., flush_ms=...)")

    @property
    def max_batch(self) -> int:
        return self.batch_size

    @property
    def max_wait_ms(self) -> float:
        return self.flush_ms

    @property
    def name(self) -> str:
        return f"static(batch_size={self.batch_size})"


@dataclass(frozen=True)
class DynamicBatching:
    """Up to `max_batch` requests, waiting at most `max_wait_ms` after the first for the rest."""

    max_batch: int = 16
    max_wait_ms: float = 1.0
    kind: ClassVar[str] = "dynamic"

    def __post_init__(self):
        _check(self.max_batch, self.max_wait_ms, "DynamicBatching(max_batch=..., max_wait_ms=...)")

    @property
    def name(self) -> str:
        return f"dynamic(max_batch={self.max_batch}, max_wait_ms={self.max_wait_ms:g})"


Policy = NoBatching | StaticBatching | DynamicBatching
POLICIES: dict[str, type] = {cls.kind: cls for cls in (NoBatching, StaticBatching, DynamicBatching)}


def _check(max_batch: int, max_wait_ms: float, example: str) -> None:
    if int(max_batch) != max_batch or max_batch < 1:
        raise ValueError(f"batch size must be an integer >= 1, got {max_batch!r}; e.g. {example}")
    if not max_wait_ms >= 0:
        raise ValueError(f"a wait must be >= 0 ms, got {max_wait_ms!r}; e.g. {example}")


def parse_policy(text: str) -> Policy:
    """`"none"`, `"static(batch_size=8)"`, `"dynamic(max_batch=32, max_wait_ms=2)"` -> a policy."""
    match = re.fullmatch(r"\s*([a-z]+)\s*(?:\((.*)\))?\s*", text or "")
    if not match or match.group(1) not in POLICIES:
        raise ValueError(f"unknown batching policy {text!r}; use one of {', '.join(POLICIES)}, "
                         "e.g. 'dynamic(max_batch=32, max_wait_ms=2)'")
    cls = POLICIES[match.group(1)]
    names = {f.name: f.type for f in fields(cls)}
    kwargs = {}
    for part in filter(None, (p.strip() for p in (match.group(2) or "").split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in names:
            raise ValueError(f"{cls.kind} policy has no parameter {key!r}; it takes {', '.join(names) or 'none'}")
        kwargs[key] = float(value) if "ms" in key else int(value)
    return cls(**kwargs)


@dataclass(frozen=True)
class Admission:
    """Admission control: at most `queue_limit` requests wait; with `deadline_ms`, a request that can
    no longer finish within `deadline_ms` of its scheduled time is answered "shed" at once (on arrival,
    from the queue length and the measured service time, and again when a worker picks it up)."""

    queue_limit: int = 10_000
    deadline_ms: float | None = None

    def __post_init__(self):
        if int(self.queue_limit) != self.queue_limit or self.queue_limit < 1:
            raise ValueError(f"queue_limit must be an integer >= 1, got {self.queue_limit!r}")
        if self.deadline_ms is not None and not self.deadline_ms > 0:
            raise ValueError(f"deadline_ms must be > 0 (or None for no deadline), got {self.deadline_ms!r}")
