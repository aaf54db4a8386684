"""The timing loop and the statistics behind every latency figure.

`time_calls` warms up, then times one call per sample with `time.perf_counter_ns` into a
preallocated list, until the p50 and p99 estimates are stable, the budget is spent or
`max_samples` is reached. `summarize` turns raw samples into percentiles with bootstrap
confidence intervals. Both are plain numpy, so they can be checked on recorded samples.

Warm-up on an accelerator is not a fixed count: a GPU that sat idle runs its first calls at
idle clocks (345 MHz against 1980 MHz under load on an H200), and ten calls left the first
measurement up to 30% off. With `warmup="auto"`, and whenever a `sync` is given, warm-up goes
on in windows of calls until the median latency of the last `WARMUP_WINDOWS` windows agrees
within `WARMUP_REL_TOL` (`warmup_settled`), or `warmup_max_s` is spent.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

STOP_REASONS = ("stable", "budget", "max_samples", "interrupted")
_Z95 = 1.959963984540054
WARMUP_WINDOW_S = 0.05  # each warm-up window runs calls for at least this long (and >= 3 calls)
WARMUP_WINDOWS = 3  # this many consecutive windows must agree
WARMUP_REL_TOL = 0.03  # within this share of their median
WARMUP_MIN_S = 0.2  # an auto warm-up never ends sooner: clocks ramp over tens of milliseconds


@dataclass
class TimedRun:
    """Raw samples of one timing loop and why it stopped."""

    samples_ns: np.ndarray  # int64, one per timed call
    stop_reason: str  # one of STOP_REASONS
    warmup: int  # warm-up calls made
    warmup_s: float = 0.0  # seconds spent warming up
    warmup_settled: bool | None = None  # auto warm-up: latency settled (False: warmup_max_s ran out first)

    @property
    def complete(self) -> bool:
        return self.stop_reason != "interrupted"


def quantile_ci_order_stats(sorted_ns: np.ndarray, q: float) -> tuple[float, float]:
    """Distribution-free ~95% interval for the q-quantile from order statistics (cheap:
    used inside the loop's stopping rule; reported intervals use the bootstrap)."""
    n = sorted_ns.shape[0]
    half = _Z95 * math.sqrt(n * q * (1.0 - q))
    low = min(max(int(math.floor(n * q - half)) - 1, 0), n - 1)
    high = min(max(int(math.ceil(n * q + half)), 0), n - 1)
    return float(sorted_ns[low]), float(sorted_ns[high])


def is_stable(samples_ns: np.ndarray, rel_ci: float) -> bool:
    """True when the p99 interval is narrower than `rel_ci` of p99 and the p50 interval
    narrower than a quarter of that (of p50)."""
    ordered = np.sort(samples_ns)
    for q, tolerance in ((0.5, rel_ci / 4.0), (0.99, rel_ci)):
        low, high = quantile_ci_order_stats(ordered, q)
        centre = float(np.quantile(ordered, q))
        if centre <= 0 or (high - low) > tolerance * centre:
            return False
    return True


def warmup_settled(window_medians_ns: Sequence[float], *, windows: int = WARMUP_WINDOWS,
                   rel_tol: float = WARMUP_REL_TOL) -> bool:
    """True when the last `windows` window medians agree within `rel_tol` of their median and
    the last one is no faster than the others by more than that (still speeding up = not warm)."""
    if len(window_medians_ns) < windows:
        return False
    last = np.asarray(window_medians_ns[-windows:], dtype=np.float64)
    centre = float(np.median(last))
    return centre > 0 and float(last.max() - last.min()) <= rel_tol * centre


def time_calls(
    fn: Callable[[Any], Any],
    batches: Sequence[Any],
    *,
    warmup: int | str = 10,
    min_samples: int = 100,
    max_samples: int = 10_000,
    budget_s: float = 2.0,
    rel_ci: float = 0.10,
    sync: Callable[[], Any] | None = None,
    check: Callable[[Any, Any], None] | None = None,
    warmup_max_s: float = 5.0,
) -> TimedRun:
    """Time `fn(batch)` cycling through `batches`; `check(output, batch)` validates each
    warm-up output (never called inside the timed loop). `sync` (e.g.
    torch.cuda.synchronize) is called before and after each timed call.

    `warmup` calls come first; with `warmup="auto"` or a `sync` (a device whose clocks ramp),
    warm-up then goes on until the latency settles (`warmup_settled`) or `warmup_max_s` is
    spent, so `warmup` is a minimum there. A KeyboardInterrupt stops the loop and returns the
    samples so far, marked interrupted."""
    if not batches:
        raise ValueError("time_calls needs at least one batch; pass a non-empty list of inputs")
    if min_samples < 1 or max_samples < min_samples:
        raise ValueError(f"need 1 <= min_samples <= max_samples, got {min_samples} and {max_samples}")
    auto = warmup == "auto" or sync is not None
    if warmup == "auto":
        warmup = 1
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be a number of calls (>= 0) or 'auto'")
    n_batches = len(batches)
    done_warmup, settled = 0, None
    started = time.perf_counter()
    try:
        for done_warmup in range(1, max(warmup, 1) + 1):
            batch = batches[(done_warmup - 1) % n_batches]
            output = fn(batch)
            if sync is not None:
                sync()
            if check is not None:
                check(output, batch)
        # Every input shape once: eager runtimes pay seconds-long first calls per new shape
        # (kernel selection, primitive caches); unwarmed shapes would be timed as latency.
        shape_deadline = time.perf_counter() + max(warmup_max_s, 0.0)
        for index in first_of_each_shape(batches)[1:]:
            if index < done_warmup or time.perf_counter() > shape_deadline:
                continue
            output = fn(batches[index])
            if sync is not None:
                sync()
            if check is not None:
                check(output, batches[index])
            done_warmup += 1
        if auto:
            deadline_ns = time.perf_counter_ns() + int(max(warmup_max_s, 0.0) * 1e9)
            extra, settled = _settle(fn, batches, n_batches, done_warmup, sync, deadline_ns)
            done_warmup += extra
    except KeyboardInterrupt:
        return TimedRun(np.zeros(0, dtype=np.int64), "interrupted", done_warmup - 1,
                        time.perf_counter() - started, settled)
    warmup_s = time.perf_counter() - started
    gc.collect()
    loop = _timed_loop if sync is None else _timed_loop_synced
    samples, count, stop = loop(fn, batches, n_batches, min_samples, max_samples, budget_s, rel_ci, sync)
    return TimedRun(np.asarray(samples[:count], dtype=np.int64), stop, done_warmup, warmup_s, settled)


def first_of_each_shape(batches: Sequence[Any], limit: int = 1024) -> list[int]:
    """Index of the first batch with each input signature (names, shapes, dtypes), in order,
    among the first `limit` batches."""
    seen: dict[Any, int] = {}
    for index, batch in enumerate(batches[:limit]):
        seen.setdefault(_signature(batch), index)
    return sorted(seen.values())


def _signature(batch: Any) -> Any:
    if isinstance(batch, dict):
        return tuple(sorted((name, _signature(value)) for name, value in batch.items()))
    if isinstance(batch, (list, tuple)):
        return tuple(_signature(value) for value in batch)
    shape = getattr(batch, "shape", None)
    return (tuple(shape), str(getattr(batch, "dtype", ""))) if shape is not None else type(batch).__name__


def _settle(fn, batches, n_batches, done, sync, deadline_ns) -> tuple[int, bool]:
    """Warm-up windows (synced when `sync` is given) until `warmup_settled` or `deadline_ns`
    (a perf_counter_ns instant); returns (calls made, settled)."""
    perf = time.perf_counter_ns
    medians: list[float] = []
    calls, first = 0, perf()
    while True:
        window: list[int] = []
        window_end = perf() + int(WARMUP_WINDOW_S * 1e9)
        while (len(window) < 3 or perf() < window_end) and perf() < deadline_ns:
            batch = batches[(done + calls) % n_batches]
            if sync is not None:
                sync()
            start = perf()
            fn(batch)
            if sync is not None:
                sync()
            window.append(perf() - start)
            calls += 1
        if window:
            medians.append(float(np.median(window)))
        now = perf()
        if (now - first) >= WARMUP_MIN_S * 1e9 and warmup_settled(medians):
            return calls, True
        if now >= deadline_ns:
            return calls, False


def _next_check(count: int) -> int:
    return count + max(count // 4, 1)


def _timed_loop(fn, batches, n_batches, min_samples, max_samples, budget_s, rel_ci, _sync):
    samples = [0] * max_samples
    perf = time.perf_counter_ns
    deadline = perf() + int(budget_s * 1e9)
    next_check, count, stop = min_samples, 0, "max_samples"
    try:
        while count < max_samples:
            batch = batches[count % n_batches]
            start = perf()
            fn(batch)
            end = perf()
            samples[count] = end - start
            count += 1
            if end >= deadline:
                stop = "budget"
                break
            if count >= next_check:
                if is_stable(np.asarray(samples[:count]), rel_ci):
                    stop = "stable"
                    break
                next_check = _next_check(count)
    except KeyboardInterrupt:
        stop = "interrupted"
    return samples, count, stop


def _timed_loop_synced(fn, batches, n_batches, min_samples, max_samples, budget_s, rel_ci, sync):
    samples = [0] * max_samples
    perf = time.perf_counter_ns
    deadline = perf() + int(budget_s * 1e9)
    next_check, count, stop = min_samples, 0, "max_samples"
    try:
        while count < max_samples:
            batch = batches[count % n_batches]
            sync()
            start = perf()
            fn(batch)
            sync()
            end = perf()
            samples[count] = end - start
            count += 1
            if end >= deadline:
                stop = "budget"
                break
            if count >= next_check:
                if is_stable(np.asarray(samples[:count]), rel_ci):
                    stop = "stable"
                    break
                next_check = _next_check(count)
    except KeyboardInterrupt:
        stop = "interrupted"
    return samples, count, stop


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of per-call latency in milliseconds, with bootstrap 95% intervals."""

    samples: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    mean_ms: float
    std_ms: float
    p50_ci_low_ms: float
    p50_ci_high_ms: float
    p99_ci_low_ms: float
    p99_ci_high_ms: float
    noisy: bool  # the p99 interval is wider than rel_ci of p99 (or too few samples to tell)


def bootstrap_quantile_ci(samples: np.ndarray, qs: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> np.ndarray:
    """Percentile-bootstrap intervals for quantiles `qs`: array of shape (len(qs), 2)."""
    samples = np.asarray(samples, dtype=np.float64)
    n = samples.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 4_000_000 // max(n, 1)))  # bound memory: ~32 MB of indices per chunk
    estimates = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        resampled = samples[rng.integers(0, n, size=(size, n))]
        estimates.append(np.quantile(resampled, qs, axis=1).T)
    alpha = (1.0 - level) / 2.0
    return np.quantile(np.concatenate(estimates, axis=0), [alpha, 1.0 - alpha], axis=0).T


def summarize(samples_ns: np.ndarray | Sequence[int], *, rel_ci: float = 0.10, n_boot: int = 1000,
              seed: int = 0) -> LatencyStats | None:
    """Percentiles, mean, spread and bootstrap intervals of raw nanosecond samples
    (None for no samples). Percentiles use numpy's default (linear) interpolation."""
    values = np.asarray(samples_ns, dtype=np.float64) / 1e6
    n = values.shape[0]
    if n == 0:
        return None
    p50, p90, p95, p99 = np.quantile(values, [0.5, 0.9, 0.95, 0.99])
    (p50_low, p50_high), (p99_low, p99_high) = bootstrap_quantile_ci(values, (0.5, 0.99), n_boot=n_boot, seed=seed)
    noisy = bool(n < 2 or (p99_high - p99_low) > rel_ci * p99)
    return LatencyStats(
        samples=int(n), p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
        max_ms=float(values.max()), min_ms=float(values.min()), mean_ms=float(values.mean()),
        std_ms=float(values.std(ddof=1)) if n > 1 else 0.0,
        p50_ci_low_ms=float(p50_low), p50_ci_high_ms=float(p50_high),
        p99_ci_low_ms=float(p99_low), p99_ci_high_ms=float(p99_high), noisy=noisy,
    )
