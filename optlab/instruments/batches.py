"""The batches a candidate is timed on: requests pooled row-wise (token arrays padded), cut into
distinct batches of the workload's batch size (cycling rows when there are too few), and the
check that a prediction is batch-first and finite. Bad inputs fail here with a one-line
`MeasurementError` naming the candidate, before any timing starts.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from optlab.data.datasets import Batch, trim_padding
from optlab.instruments.measurement import MeasurementError

Inputs = Batch | Sequence[Batch]


def _rows(batch: Batch) -> int:
    sizes = {np.shape(value)[0] if np.ndim(value) else None for value in batch.values()}
    if len(sizes) != 1 or None in sizes:
        raise MeasurementError(f"inputs have inconsistent batch dimensions {sorted(map(str, sizes))}; every array "
                               "in a batch must have the examples on axis 0")
    return int(sizes.pop())


def _pool(inputs: Sequence[Batch]) -> Batch:
    """Concatenate requests row-wise; token arrays of different lengths are zero-padded
    (attention_mask 0 = padding) and trimmed again when batches are cut."""
    pooled: Batch = {}
    for name in inputs[0]:
        arrays = [np.asarray(batch[name]) for batch in inputs]
        if len({a.shape[1:] for a in arrays}) > 1:
            if any(a.ndim != 2 for a in arrays):
                raise MeasurementError(f"input {name!r} has differently shaped rows across requests and is not a "
                                       "2-D token array; pass a single Batch or same-shaped requests")
            width = max(a.shape[1] for a in arrays)
            arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays]
        pooled[name] = np.concatenate(arrays, axis=0)
    return pooled


def make_batches(inputs: Inputs, batch_size: int | None, *, max_batches: int | None = None,
                 name: str = "candidate") -> list[Batch]:
    """Distinct batches of `batch_size` rows cut from `inputs` (a Batch or a list of requests),
    cycling rows when there are fewer than needed; `None` keeps the requests as given.
    By default up to 64 batches (fewer for big batches), so real input lengths vary."""
    if isinstance(inputs, dict):
        requests = [inputs]
    else:
        requests = list(inputs or [])
    if not requests or not all(isinstance(batch, dict) and batch for batch in requests):
        raise MeasurementError(f"{name}: empty inputs; pass a Batch (dict of arrays) or a non-empty list of them, "
                               "e.g. data.requests or data.test.inputs")
    if any(_rows(batch) == 0 for batch in requests):
        raise MeasurementError(f"{name}: an input batch has 0 rows; give at least one example per batch")
    if batch_size is None:
        return requests
    if max_batches is None:
        max_batches = max(1, min(64, 4096 // batch_size))
    pool = requests[0] if len(requests) == 1 else _pool(requests)
    rows = _rows(pool)
    batches = []
    for k in range(min(max_batches, max(1, math.ceil(rows / batch_size)))):
        index = (np.arange(batch_size) + k * batch_size) % rows
        batches.append(trim_padding({key: np.ascontiguousarray(value[index]) for key, value in pool.items()}))
    return batches


def _checker(name: str):
    def check(output: Any, batch: Batch) -> None:
        array = np.asarray(output)
        rows = _rows(batch)
        if array.ndim == 0 or array.shape[0] != rows:
            raise MeasurementError(f"{name}: predict returned shape {array.shape} for a batch of {rows} rows; the "
                                   "output must be batch-first (rows on axis 0)")
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            raise MeasurementError(f"{name}: predict returned NaN or infinite values for a batch of {rows} rows")
    return check

