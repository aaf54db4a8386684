"""The mechanics of length-bucketed batching (`policies.BucketedBatching`) for the server: a
request's token length, a queue kept per bucket, the batch cut (or padded) to one sequence length,
and the refusal of a model that cannot take a shorter sequence.

The queue keeps one FIFO per bucket and answers the oldest request overall first, so a worker
always starts a batch with the request that has waited longest (its max-wait deadline holds, even
alone in a rare bucket) and then fills that batch from the same bucket only.
"""
from __future__ import annotations

import collections
import functools
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from optlab.models.onnx_signature import read_signature
from optlab.serving.policies import BucketedBatching

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def request_length(payload: dict[str, np.ndarray], key: str) -> int:
    """Tokens up to the last real position of any row (a 2-D mask), or the largest given length (1-D)."""
    value = payload.get(key)
    if value is None:
        raise ValueError(f"bucketed batching reads each request's length from {key!r}, which this request lacks "
                         f"(it has {', '.join(payload) or 'nothing'}); send it or set BucketedBatching(length_key=...)")
    value = np.asarray(value)
    if value.ndim >= 2:
        real = np.flatnonzero(value.reshape(value.shape[0], value.shape[1], -1).any(axis=(0, 2)))
        return int(real[-1]) + 1 if len(real) else 1
    return max(int(value.max()), 1) if value.size else 1


def fit_width(batch: dict[str, np.ndarray], key: str, width: int) -> dict[str, np.ndarray]:
    """The batch with its sequence axis (axis 1 of every input as wide as the `key` mask, or of every
    2-D+ input when `key` holds lengths) cut to `width`, or zero-padded up to it."""
    mask = batch[key]
    if mask.ndim >= 2:
        seq = mask.shape[1]
        sequences = [name for name, value in batch.items() if value.ndim >= 2 and value.shape[1] == seq]
    else:
        sequences = [name for name, value in batch.items() if value.ndim >= 2 and name != key]
    out = dict(batch)
    for name in sequences:
        value = batch[name]
        if value.shape[1] > width:
            out[name] = np.ascontiguousarray(value[:, :width])
        elif value.shape[1] < width:
            out[name] = np.pad(value, [(0, 0), (0, width - value.shape[1])] + [(0, 0)] * (value.ndim - 2))
    return out


def refuse_fixed_length(model: Any, policy: BucketedBatching) -> None:
    """Raise a one-line ValueError if `model` is an ONNX graph whose token inputs have a fixed sequence
    length: bucketed batching sends shorter (or bucket-wide) sequences, which such a graph rejects."""
    path = _onnx_path(model)
    if path is None:
        return
    fixed = _fixed_sequence_inputs(str(path), os.stat(path).st_mtime_ns, policy.length_key)
    if fixed:
        name, dims = fixed[0]
        raise ValueError(
            f"{Path(path).name} has a fixed sequence length ({name}: [{dims}]), so bucketed batching cannot trim "
            f"its padding; re-export it with a dynamic sequence axis (optimum's exporter, or torch.onnx.export(..., "
            f"dynamic_axes={{'{name}': {{0: 'batch', 1: 'sequence'}}}})) or serve it with DynamicBatching")


def _onnx_path(model: Any) -> Path | None:
    inner = getattr(model, "model", None)
    for candidate in (getattr(inner, "path", None), getattr(model, "artifact_path", None)):
        if candidate is not None and str(candidate).endswith(".onnx") and Path(candidate).is_file():
            return Path(candidate)
    return None


@functools.lru_cache(maxsize=32)
def _fixed_sequence_inputs(path: str, _mtime_ns: int, key: str) -> list[tuple[str, str]]:

    fixed = []
    for spec in read_signature(path).inputs:
        if (spec.name in TOKEN_INPUTS or spec.name == key) and len(spec.shape) >= 2 and isinstance(spec.shape[1], int):
            fixed.append((spec.name, ", ".join("?" if d is None else str(d) for d in spec.shape)))
    return fixed


class FifoQueue(collections.deque):
    """The server's plain queue: a batch takes whatever is next."""

    def pop_next(self, first: Any) -> Any:
        return self.popleft() if self else None


class BucketQueue:
    """One FIFO per bucket with the interface the server uses (append, popleft, pop_next, len, iter,
    clear). `popleft` answers the oldest request of any bucket, `pop_next(first)` the oldest request of
    `first`'s bucket (None when that bucket is empty). Requests carry `bucket` and `enqueued_ns`."""

    def __init__(self, buckets: int):
        self._queues = [collections.deque() for _ in range(buckets)]
        self._length = 0

    def append(self, request: Any) -> None:
        self._queues[request.bucket].append(request)
        self._length += 1

    def popleft(self) -> Any:
        heads = [q for q in self._queues if q]
        if not heads:
            raise IndexError("pop from an empty BucketQueue")
        self._length -= 1
        return min(heads, key=lambda q: q[0].enqueued_ns).popleft()

    def pop_next(self, first: Any) -> Any:
        queue = self._queues[first.bucket]
        if not queue:
            return None
        self._length -= 1
        return queue.popleft()

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Any]:
        return iter(sorted((r for q in self._queues for r in q), key=lambda r: r.enqueued_ns))

    def clear(self) -> None:
        for queue in self._queues:
            queue.clear()
        self._length = 0
