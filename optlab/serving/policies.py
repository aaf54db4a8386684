"""Batching policies and admission control: small frozen dataclasses, looked up by name.

A policy says how a worker forms a batch from the queue: `max_batch` requests at most, waiting at
most `max_wait_ms` after the first one arrived for more to come. "none" is one request at a time,
"static" waits for a full batch (flushing a partial one after `flush_ms` so a run always ends),
"dynamic" is Triton's dynamic batcher (`max_batch_size`, `max_queue_delay`); "bucketed" is the
dynamic batcher within token-length buckets, so a short text never pays for a long neighbour's padding.

`parse_policy` reads the names the policies print (`"dynamic(max_batch=32, max_wait_ms=2)"`,
`"bucketed(max_batch=32, max_wait_ms=2, edges=16/32/64/128)"`) and a positional shorthand,
fields in order: `"dynamic:32:2"`, `"bucketed:32:2.0:16,32,64,128"`.
"""
from __future__ import annotations

import re
from bisect import bisect_left
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


PAD_TO = ("longest", "edge")


@dataclass(frozen=True)
class BucketedBatching:
    """Dynamic batching within token-length buckets. A request's length is the last real position of
    its `length_key` (an attention mask, rows x tokens; or an array of lengths); bucket i holds the
    lengths in (edges[i-1], edges[i]], and one past the last edge holds what is longer. A batch takes
    requests of one bucket only, up to `max_batch`, waiting at most `max_wait_ms` after its first
    request (the oldest queued one, so no request waits for its bucket to fill); before the model call,
    the batch's token inputs are cut to its longest real row (`pad_to="longest"`) or padded to the
    bucket's edge (`pad_to="edge"`: a fixed shape per bucket, for runtimes that compile per shape).
    The model must accept any sequence length: the server refuses an ONNX graph with a fixed one."""

    max_batch: int = 32
    max_wait_ms: float = 2.0
    edges: tuple[int, ...] = (16, 32, 64, 128)
    pad_to: str = "longest"
    length_key: str = "attention_mask"
    kind: ClassVar[str] = "bucketed"

    def __post_init__(self):
        example = "BucketedBatching(max_batch=32, max_wait_ms=2, edges=(16, 32, 64, 128))"
        _check(self.max_batch, self.max_wait_ms, example)
        edges = tuple(self.edges) if isinstance(self.edges, (tuple, list)) else (self.edges,)
        if not edges or any(not isinstance(e, (int, float)) or int(e) != e or e < 1 for e in edges):
            raise ValueError(f"bucket edges must be integers >= 1 (token lengths), got {self.edges!r}; e.g. {example}")
        edges = tuple(int(e) for e in edges)
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"bucket edges must increase strictly, got {edges}; e.g. {example}")
        object.__setattr__(self, "edges", edges)
        if self.pad_to not in PAD_TO:
            raise ValueError(f"pad_to={self.pad_to!r}; choose one of {', '.join(PAD_TO)}")
        if not self.length_key or not isinstance(self.length_key, str):
            raise ValueError(f"length_key must name the request input that holds the lengths (e.g. "
                             f"'attention_mask'), got {self.length_key!r}")

    def bucket(self, length: int) -> int:
        """The bucket of a request `length` tokens long (len(edges) for one longer than the last edge)."""
        return bisect_left(self.edges, length)

    def width(self, bucket: int, longest: int) -> int:
        """The sequence length a batch of `bucket` whose longest real row is `longest` is sent with."""
        if self.pad_to == "edge" and bucket < len(self.edges):
            return self.edges[bucket]
        return max(int(longest), 1)

    @property
    def name(self) -> str:
        extra = "" if self.pad_to == "longest" else f", pad_to={self.pad_to}"
        extra += "" if self.length_key == "attention_mask" else f", length_key={self.length_key}"
        return (f"bucketed(max_batch={self.max_batch}, max_wait_ms={self.max_wait_ms:g}, "
                f"edges={'/'.join(map(str, self.edges))}{extra})")


Policy = NoBatching | StaticBatching | DynamicBatching | BucketedBatching
POLICIES: dict[str, type] = {cls.kind: cls for cls in (NoBatching, StaticBatching, DynamicBatching, BucketedBatching)}


def _edges(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in re.split(r"[,/ |]+", text.strip()) if part)
    except ValueError:
        raise ValueError(f"bucket edges {text!r} are not integers; write them like 16,32,64,128 "
                         "(or 16/32/64/128 inside parentheses)") from None


_PARSERS = {"edges": _edges, "pad_to": str.strip, "length_key": str.strip}


def _check(max_batch: int, max_wait_ms: float, example: str) -> None:
    if int(max_batch) != max_batch or max_batch < 1:
        raise ValueError(f"batch size must be an integer >= 1, got {max_batch!r}; e.g. {example}")
    if not max_wait_ms >= 0:
        raise ValueError(f"a wait must be >= 0 ms, got {max_wait_ms!r}; e.g. {example}")


def _value(key: str, text: str):
    parse = _PARSERS.get(key, float if "ms" in key else int)
    try:
        return parse(text.strip())
    except ValueError as exc:
        if key in _PARSERS:
            raise
        raise ValueError(f"{key}={text.strip()!r} is not a number") from exc


def parse_policy(text: str) -> Policy:
    """`"none"`, `"static(batch_size=8)"`, `"dynamic(max_batch=32, max_wait_ms=2)"`,
    `"bucketed(max_batch=32, max_wait_ms=2, edges=16/32/64/128)"` or the positional shorthand
    `"bucketed:32:2.0:16,32,64,128"` (fields in order) -> a policy."""
    match = re.fullmatch(r"\s*([a-z]+)\s*(?:\((.*)\)|:(.*))?\s*", text or "")
    if not match or match.group(1) not in POLICIES:
        raise ValueError(f"unknown batching policy {text!r}; use one of {', '.join(POLICIES)}, "
                         "e.g. 'dynamic(max_batch=32, max_wait_ms=2)' or 'bucketed:32:2:16,32,64,128'")
    cls = POLICIES[match.group(1)]
    names = [f.name for f in fields(cls)]
    kwargs = {}
    if match.group(3) is not None:  # positional: kind:field1:field2:...
        parts = match.group(3).split(":")
        if len(parts) > len(names):
            raise ValueError(f"{cls.kind} policy takes at most {len(names)} values ({':'.join(names)}), "
                             f"got {len(parts)} in {text!r}")
        return cls(**{key: _value(key, value) for key, value in zip(names, parts, strict=False) if value.strip()})
    # split at the commas before `name=`, so edges may be written 16,32,64 inside the parentheses too
    for part in filter(None, (p.strip() for p in re.split(r",\s*(?=[a-z_]+\s*=)", match.group(2) or ""))):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in names:
            raise ValueError(f"{cls.kind} policy has no parameter {key!r}; it takes {', '.join(names) or 'none'}")
        kwargs[key] = _value(key, value)
    return cls(**kwargs)


@dataclass(frozen=True)
class Admission:
    """Admission control: at most `queue_limit` requests wait; with `deadline_ms`, a request that can
    no longer finish within `deadline_ms` of its scheduled time is answered "shed" at once (on arrival,
    from the queue length and the measured service time, and again when a worker picks it up).

    The service time is estimated per batch size (`optlab.serving.admission.ServiceEstimate`); what a
    slow call taught it fades with time (`estimate_half_life_s`) and with shed requests (every
    `shed_half_life` of them halve it), and when nothing has been admitted for `probe_every_ms` one
    request goes through as a probe, so a stall never leaves the server shedding everything."""

    queue_limit: int = 10_000
    deadline_ms: float | None = None
    estimate_half_life_s: float = 0.1
    shed_half_life: int = 32
    probe_every_ms: float = 50.0

    def __post_init__(self):
        if int(self.queue_limit) != self.queue_limit or self.queue_limit < 1:
            raise ValueError(f"queue_limit must be an integer >= 1, got {self.queue_limit!r}")
        if self.deadline_ms is not None and not self.deadline_ms > 0:
            raise ValueError(f"deadline_ms must be > 0 (or None for no deadline), got {self.deadline_ms!r}")
        if not (self.estimate_half_life_s > 0 and self.probe_every_ms > 0):
            raise ValueError(f"estimate_half_life_s and probe_every_ms must be > 0, got "
                             f"{self.estimate_half_life_s!r} and {self.probe_every_ms!r}")
        if int(self.shed_half_life) != self.shed_half_life or self.shed_half_life < 1:
            raise ValueError(f"shed_half_life must be an integer >= 1 (requests), got {self.shed_half_life!r}")
