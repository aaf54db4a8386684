"""Checks an analyst's model and inputs pass when wrapped, before any candidate is built.

- `check_baseline`: the baseline run twice on the same rows must give finite outputs that agree
  with each other; otherwise every candidate would be blamed for the baseline's NaN or noise.
- `plan_memory`: rows x bytes per row x the largest batch x the copies the runtimes make, against
  the memory this process may still use (psutil, and `ulimit -v`); the largest batch that fits,
  or a one-line refusal with the figures, so that the kernel never kills a study holding its lock.
- `warn_few_rows`: below a stated minimum of rows, intervals and calibration say little.
"""
from __future__ import annotations

import resource
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from optlab.data.datasets import Batch
from optlab.data.user_inputs import rows, take

MIN_QUALITY_ROWS = 32  # below it a quality interval is too wide to decide on (below 8 it is not shown)
MIN_CALIBRATION_ROWS = 16  # static int8 ranges from fewer rows clip the next input
SANITY_ROWS = 64  # rows the baseline is run on twice
RUNTIME_COPIES = 8  # per batch: the input as given, its tensor, float64 conversions, activations, a second runtime
MEMORY_HEADROOM = 0.5  # a plan uses at most this share of the memory left
BATCH_SIZES = (256, 128, 64, 32, 16, 8, 4, 2, 1)  # 256: the evaluation batch of optlab.instruments.quality
GIB = 1024 ** 3


class FewRows(UserWarning):
    """Too few rows for a figure to mean much (an interval, a calibration)."""


class NotEnoughMemory(ValueError):
    """A study of these inputs would not fit in the memory left (a ValueError: bad input, one line)."""


class NonDeterministicBaseline(ValueError):
    """The baseline gives different outputs for the same rows."""


@dataclass(frozen=True)
class MemoryPlan:
    """How many rows a batch may hold, and the figures it was chosen from (bytes)."""

    max_batch_rows: int
    bytes_per_row: int
    available_bytes: int
    needed_bytes: int  # at max_batch_rows

    def note(self) -> str:
        return (f"memory: {self.bytes_per_row / 2**20:,.1f} MiB per input row; batches of up to "
                f"{self.max_batch_rows} rows need about {self.needed_bytes / GIB:.2f} GiB of the "
                f"{self.available_bytes / GIB:.2f} GiB available")


def available_memory() -> int:
    """Bytes this process may still allocate: free memory, and what `ulimit -v` leaves if it is set."""
    free = int(psutil.virtual_memory().available)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft not in (resource.RLIM_INFINITY, -1):
        free = min(free, max(0, int(soft) - int(psutil.Process().memory_info().vms)))
    return free


def bytes_per_row(batch: Batch) -> int:
    n = rows(batch)
    return int(sum(np.asarray(v).nbytes for v in batch.values() if np.ndim(v)) // max(n, 1))


def plan_memory(batch: Batch, *, available: int | None = None) -> MemoryPlan:
    """The largest batch (of BATCH_SIZES, at most the rows given) whose working set, bytes per row x
    batch x RUNTIME_COPIES, fits in MEMORY_HEADROOM of the memory left; a ValueError naming the
    figures when not even one row fits."""
    per_row = bytes_per_row(batch)
    available = available_memory() if available is None else int(available)
    budget = available * MEMORY_HEADROOM
    n = rows(batch)
    for size in BATCH_SIZES:
        size = min(size, n)
        needed = per_row * size * RUNTIME_COPIES
        if needed <= budget:
            return MemoryPlan(size, per_row, available, needed)
    raise NotEnoughMemory(
        f"the inputs take {per_row / 2**20:,.1f} MiB per row; even a batch of 1 row needs about "
        f"{per_row * RUNTIME_COPIES / GIB:.2f} GiB ({RUNTIME_COPIES} copies the runtimes make) but only "
        f"{available / GIB:.2f} GiB are available (half kept as headroom); give smaller rows (fewer features) "
        f"or run on a machine with more memory")


def warn_few_rows(n: int, calibration_rows: int | None) -> list[str]:
    """Warn (and return notes) when the rows are too few for an interval or a calibration."""
    notes = []
    if n < MIN_QUALITY_ROWS:
        notes.append(f"only {n} input rows: quality intervals need at least {MIN_QUALITY_ROWS} "
                     f"(give {MIN_QUALITY_ROWS - n} more); below 8 rows no interval is shown")
    if calibration_rows is not None and calibration_rows < MIN_CALIBRATION_ROWS:
        notes.append(f"only {calibration_rows} calibration rows: static int8 needs at least "
                     f"{MIN_CALIBRATION_ROWS} (give {MIN_CALIBRATION_ROWS - calibration_rows} more) for ranges "
                     f"that hold on the next input")
    for note in notes:
        warnings.warn(note, FewRows, stacklevel=3)
    return notes


def _predict_rows(baseline: Any, batch: Batch, batch_rows: int) -> np.ndarray:
    n = rows(batch)
    parts = [np.asarray(baseline.predict(take(batch, slice(s, s + batch_rows)))) for s in range(0, n, batch_rows)]
    return np.concatenate(parts).reshape(n, -1).astype(np.float64)


def _nonfinite(outputs: np.ndarray, layout: list[dict[str, Any]], n: int) -> str | None:
    start = 0
    for spec in layout:
        part = outputs[:, start:start + int(spec["width"])]
        start += int(spec["width"])
        nan, inf = int(np.isnan(part).sum()), int(np.isinf(part).sum())
        if nan or inf:
            return (f"the model's output {spec['name']!r} holds {nan} NaN and {inf} infinite values (of "
                    f"{part.size}) on the first {n} input rows; every comparison with it would be meaningless: "
                    f"fix the model (or the inputs' scale) before studying it")
    return None


def _moved(first: np.ndarray, second: np.ndarray, layout: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(output, max |difference|, relative error) of each output that differs between the two runs."""
    scale = max(float(np.abs(first).max()) if first.size else 0.0, 1e-12)
    moved, start = [], 0
    for spec in layout:
        a, b = first[:, start:start + int(spec["width"])], second[:, start:start + int(spec["width"])]
        start += int(spec["width"])
        biggest = float(np.abs(a - b).max()) if a.size else 0.0
        if biggest > 1e-4 * scale:
            norm = float(np.linalg.norm(a))
            moved.append((spec["name"], biggest, float(np.linalg.norm(a - b)) / norm if norm > 0 else 1.0))
    return moved


def check_baseline(baseline: Any, batch: Batch, layout: list[dict[str, Any]], *, deterministic: bool = True,
                   batch_rows: int = SANITY_ROWS) -> dict[str, Any] | None:
    """Run the baseline twice on the same rows: NaN/inf outputs are a ValueError; outputs that differ
    between the runs are a NonDeterministicBaseline naming the output, unless `deterministic=False`.
    Returns None for a baseline that agrees with itself, else both runs on those rows ({"first",
    "second", "rows"}): the quality instruments measure from them how far the baseline disagrees with
    itself, in the study's units, and widen the gate by that much."""
    sample = take(batch, slice(0, min(rows(batch), SANITY_ROWS)))
    n = rows(sample)
    first = _predict_rows(baseline, sample, batch_rows)
    problem = _nonfinite(first, layout, n)
    if problem:
        raise ValueError(problem)
    second = _predict_rows(baseline, sample, batch_rows)
    problem = _nonfinite(second, layout, n)
    if problem:
        raise ValueError(problem + " (on a second run)")
    moved = _moved(first, second, layout)
    if moved and deterministic:
        name, biggest, relative = max(moved, key=lambda m: m[1])
        raise NonDeterministicBaseline(
            f"the baseline disagrees with itself: output {name!r} moved by up to {biggest:.3g} (relative error "
            f"{relative:.1%}) between two runs on the same {n} rows, so every candidate would be blamed for it; "
            f"make the model deterministic (eval mode, no dropout or sampling), or pass deterministic=False to "
            f"accept it (the quality gate then widens by that disagreement)")
    return {"first": first, "second": second, "rows": n} if moved else None
