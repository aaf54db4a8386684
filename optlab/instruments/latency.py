"""Measure a candidate honestly: latency percentiles with intervals, a throughput sweep,
size, peak memory and cold start, recorded with the batch size, threads and machine.

`measure(candidate, inputs, Workload())` returns a `Measurement`; `.to_row()` is one
tidy row of scalars, while the raw samples stay in the dataclass (and its JSON).

Cost decides what is timed: a throughput batch size whose single call would take more than
`SWEEP_MAX_CALL_SHARE` of `Workload.sweep_budget_s` is skipped with a note (an 11 MB model
took 9.5 s per batch-256 call, so a 1 s "budget" became minutes), and a `deadline` (a
study's time limit) shortens the loops and skips what no longer fits. `noisy` is also set
when other processes used the machine while the latency loop ran (see `contention`), or
when the candidate's own repeat at the same batch size disagrees.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Sequence

import numpy as np

from optlab.data.datasets import Batch, trim_padding
from optlab.instruments.coldstart import ColdStart, ColdStartError, cold_start
from optlab.instruments.contention import Busy, BusyWindow
from optlab.instruments.environment import Environment, environment, physical_cores
from optlab.instruments.footprint import footprint
from optlab.instruments.timing import LatencyStats, TimedRun, summarize, time_calls
from optlab.models.candidate import Candidate

# torch is imported inside the functions that use it: a heavy optional dependency that timing an ONNX
# Runtime or OpenVINO candidate must not load.

Inputs = Batch | Sequence[Batch]

SWEEP_MAX_CALL_SHARE = 0.25  # no sweep call may cost more than this share of sweep_budget_s
SWEEP_MIN_SAMPLES = 5  # a sweep point that cannot get this many calls in its budget is skipped
REPEAT_DISAGREEMENT = 1.5  # latency p50 and the sweep's p50 at the same batch size differ by more: noisy
COLD_START_OVERHEAD_S = 1.5  # a fresh interpreter plus a runtime import, for the time-limit estimate


class MeasurementError(ValueError):
    """A candidate cannot be measured (bad inputs, or its predict fails, returns NaN or
    the wrong batch size). The message names the candidate and the problem."""


@dataclass(frozen=True)
class Workload:
    """How to measure. `batch_size=None` times the given requests as they are (their real
    batch mix); an int cuts batches of that many rows from the inputs."""

    batch_size: int | None = 1
    throughput_batch_sizes: tuple[int, ...] = (1, 32, 256)
    threads: int = field(default_factory=physical_cores)
    warmup: int = 10
    min_samples: int = 100
    max_samples: int = 10_000
    budget_s: float = 2.0  # latency loop, after warm-up
    sweep_budget_s: float = 1.0  # each throughput batch size
    rel_ci: float = 0.10  # stop when p99's 95% interval is this narrow; wider is flagged noisy
    cold_start_repeats: int = 5
    memory: bool = True
    cold_start: bool = True
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self):
        def positive_int(name: str, value: Any) -> None:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Workload.{name}={value!r} must be a positive integer")

        if self.batch_size is not None:
            positive_int("batch_size", self.batch_size)
        object.__setattr__(self, "throughput_batch_sizes", tuple(int(b) for b in self.throughput_batch_sizes))
        for size in self.throughput_batch_sizes:
            positive_int("throughput_batch_sizes", size)
        for name in ("threads", "min_samples", "max_samples", "cold_start_repeats", "n_boot"):
            positive_int(name, getattr(self, name))
        if self.warmup < 0:
            raise ValueError(f"Workload.warmup={self.warmup!r} must be >= 0")
        if self.max_samples < self.min_samples:
            raise ValueError(f"Workload.max_samples ({self.max_samples}) must be >= min_samples ({self.min_samples})")
        if self.budget_s <= 0 or self.sweep_budget_s <= 0 or not 0 < self.rel_ci < 1:
            raise ValueError("Workload.budget_s and sweep_budget_s must be > 0 and rel_ci in (0, 1)")

    @classmethod
    def smoke(cls, **overrides: Any) -> "Workload":
        """A tiny setting for CI and notebook smoke runs (cold start taken once)."""
        settings = dict(throughput_batch_sizes=(1, 8), warmup=2, min_samples=10, max_samples=200, budget_s=0.2,
                        sweep_budget_s=0.1, cold_start_repeats=1, n_boot=200)
        return cls(**{**settings, **overrides})

    @classmethod
    def workshop(cls, **overrides: Any) -> "Workload":
        """The walkthroughs' default setting: about a second per candidate's latency loop, half a
        second per batch size of the sweep, cold start taken three times."""
        return cls(**{**dict(budget_s=1.0, sweep_budget_s=0.5, cold_start_repeats=3), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput_batch_sizes": list(self.throughput_batch_sizes)}


@dataclass
class SweepPoint:
    """Per-batch latency and throughput at one batch size."""

    batch_size: int
    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float  # rows per second: batch_size * calls / time spent in calls
    samples_ns: list[int] = field(default_factory=list, repr=False)


@dataclass
class Measurement:
    """Everything measured about one candidate. Units are in the field names."""

    candidate: str
    env: Environment
    complete: bool = True
    stop_reason: str | None = None
    batch_size: int | None = None
    rows_per_call: float | None = None
    threads: int | None = None
    warmup: int = 0
    latency: LatencyStats | None = None
    sweep: list[SweepPoint] = field(default_factory=list)
    size_bytes: int | None = None
    param_count: int | None = None
    zero_fraction: float | None = None
    cold: ColdStart | None = None
    notes: list[str] = field(default_factory=list)
    skipped_batch_sizes: list[int] = field(default_factory=list)  # sweep sizes too costly for the budget
    busy_other_cpu_share: float | None = None  # other processes' share of all cores during the latency loop
    cpu_steal_share: float | None = None
    repeat_p50_ratio: float | None = None  # sweep p50 / latency p50 at the same batch size (1.0 = agree)
    cold_start_error: str | None = None  # the fresh process failed: latency stands, these figures are missing
    measured_at: str = ""
    samples_ns: list[int] = field(default_factory=list, repr=False)

    @property
    def throughput(self) -> SweepPoint | None:
        return max(self.sweep, key=lambda point: point.throughput_per_s, default=None)

    def at_batch(self, batch_size: int) -> SweepPoint | None:
        """The sweep's point at `batch_size`, or None when it was not measured (or skipped)."""
        return next((point for point in self.sweep if point.batch_size == batch_size), None)

    def to_row(self) -> dict[str, Any]:
        """One flat dict of scalars (no raw samples) for a tidy DataFrame row."""
        row: dict[str, Any] = {"candidate": self.candidate, "complete": self.complete, "stop_reason": self.stop_reason,
                               "batch_size": self.batch_size, "rows_per_call": self.rows_per_call,
                               "threads": self.threads, "warmup": self.warmup}
        stats = {f.name: (getattr(self.latency, f.name) if self.latency else None) for f in fields(LatencyStats)}
        row.update(stats, samples=stats["samples"] or 0)
        best = self.throughput
        row["throughput_per_s"] = best.throughput_per_s if best else None
        row["throughput_batch_size"] = best.batch_size if best else None
        # The sweep stays long-form: one JSON record per batch size (reshape.batch_sweep expands it).
        row["sweep_json"] = json.dumps([asdict(point) for point in self.sweep])
        row.update(size_bytes=self.size_bytes, size_mb=None if self.size_bytes is None else self.size_bytes / 1e6,
                   param_count=self.param_count, zero_fraction=self.zero_fraction)
        cold = self.cold
        row["peak_rss_mb"] = cold.peak_rss_mb if cold else None
        row["start_rss_mb"] = cold.start_rss_mb if cold else None
        timed = cold is not None and cold.cold_start_ms is not None
        for key in ("cold_start_ms", "cold_start_min_ms", "cold_start_max_ms"):
            row[key] = getattr(cold, key) if timed else None
        for phase in ("startup", "import", "load", "first_call"):
            row[f"cold_start_{phase}_ms"] = getattr(cold, f"{phase}_ms") if timed else None
        row["cold_start_repeats"] = cold.repeats if timed else 0
        row["cold_start_imports_torch"] = cold.imports_torch if cold else None
        row.update(busy_other_cpu_share=self.busy_other_cpu_share, cpu_steal_share=self.cpu_steal_share,
                   repeat_p50_ratio=self.repeat_p50_ratio,
                   skipped_batch_sizes=",".join(map(str, self.skipped_batch_sizes)) or None)
        row.update(self.env.to_dict())
        row.update(measured_at=self.measured_at, notes="; ".join(self.notes))
        return row

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(
            env=self.env.to_dict(),
            latency=None if self.latency is None else asdict(self.latency),
            sweep=[asdict(point) for point in self.sweep],
            cold=None if self.cold is None else self.cold.to_dict(),
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Measurement":
        data = dict(data)
        data["env"] = Environment.from_dict(data["env"])
        data["latency"] = None if data.get("latency") is None else LatencyStats(**data["latency"])
        data["sweep"] = [SweepPoint(**point) for point in data.get("sweep", [])]
        data["cold"] = None if data.get("cold") is None else ColdStart.from_dict(data["cold"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Measurement":
        return cls.from_dict(json.loads(text))


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


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Set torch's intra-op threads for the block, only if torch is already imported."""
    torch = sys.modules.get("torch")
    if torch is None or not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(candidate: Candidate):
    if not str(candidate.device).startswith("cuda"):
        return None
    import torch  # a CUDA candidate is a torch candidate; never reached for ORT on CPU

    return torch.cuda.synchronize


def _time(candidate: Candidate, batches: list[Batch], workload: Workload, *, budget_s: float, warmup: int,
          min_samples: int) -> TimedRun:
    try:
        return time_calls(candidate.predict_fn, batches, warmup=warmup, min_samples=min_samples,
                          max_samples=max(workload.max_samples, min_samples), budget_s=budget_s,
                          rel_ci=workload.rel_ci, sync=_sync(candidate), check=_checker(candidate.name))
    except MeasurementError:
        raise
    except Exception as error:
        raise MeasurementError(f"{candidate.name}: predict raised {type(error).__name__}: {error}") from error


def _remaining(deadline: float | None) -> float:
    return math.inf if deadline is None else deadline - time.monotonic()


def measure(candidate: Candidate, inputs: Inputs, workload: Workload | None = None, *,
            deadline: float | None = None) -> Measurement:
    """Latency at `workload.batch_size`, the throughput sweep, size, and (when enabled
    and the candidate has a `loader`) peak memory and cold start in fresh processes.
    `deadline` (a `time.monotonic()` instant, e.g. a study's time limit) shortens the
    latency loop and skips sweep points and cold starts that no longer fit, with notes.
    Ctrl-C returns what was measured so far with `complete=False`."""
    workload = workload or Workload()
    name = candidate.name
    batches = make_batches(inputs, workload.batch_size, name=name)
    result = Measurement(candidate=name, env=environment(str(candidate.device)), batch_size=workload.batch_size,
                         rows_per_call=float(np.mean([_rows(b) for b in batches])), threads=workload.threads,
                         measured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    result.size_bytes = candidate.size_bytes
    result.param_count, result.zero_fraction = footprint(candidate.model, candidate.artifact_path)
    if candidate.runtime != "torch" and "threads" not in candidate.meta:
        result.notes.append("threads: the runtime session's own setting applies (candidate.meta has no 'threads')")
    result.notes.extend(str(note) for note in candidate.meta.get("notes", ()))  # what building it noted

    with torch_threads(workload.threads):
        budget = min(workload.budget_s, max(_remaining(deadline) * 0.5, 0.05))
        if budget < workload.budget_s:
            result.notes.append(f"latency loop shortened to {budget:.2f} s by the study's time limit")
        window = BusyWindow.start()
        run = _time(candidate, batches, workload, budget_s=budget, warmup=workload.warmup,
                    min_samples=workload.min_samples)
        busy = window.stop()
        result.stop_reason, result.warmup = run.stop_reason, run.warmup
        result.samples_ns = run.samples_ns.tolist()
        result.latency = summarize(run.samples_ns, rel_ci=workload.rel_ci, n_boot=workload.n_boot, seed=workload.seed)
        if not run.complete:
            _flag_noise(result, busy)
            return _incomplete(result, "latency")
        call_s = (result.latency.p50_ms / 1e3, result.rows_per_call) if result.latency else None
        for size in workload.throughput_batch_sizes:
            try:
                point_run, call_s = _sweep(candidate, inputs, size, workload, call_s, result, deadline)
            except KeyboardInterrupt:
                _flag_noise(result, busy)
                return _incomplete(result, f"throughput at batch {size}")
            if point_run is None:
                continue
            if len(point_run.samples_ns):
                result.sweep.append(_sweep_point(size, point_run.samples_ns))
            if not point_run.complete:
                _flag_noise(result, busy)
                return _incomplete(result, f"throughput at batch {size}")
    _flag_noise(result, busy)

    if workload.memory or workload.cold_start:
        if not candidate.loader:
            result.notes.append("memory and cold start skipped: the candidate has no loader")
        else:
            _cold(candidate, inputs, batches, workload, result, deadline)
    return result


def _flag_noise(result: Measurement, busy: Busy) -> None:
    """Set `noisy` (and say why in the notes) when the machine was busy or a repeat disagrees."""
    result.busy_other_cpu_share, result.cpu_steal_share = busy.other_cpu_share, busy.steal_share
    reasons = []
    if busy.contended:
        reasons.append(busy.describe())
    same = [p for p in result.sweep if p.batch_size == result.batch_size]
    if result.latency is not None and same and result.latency.p50_ms > 0:
        ratio = same[0].p50_ms / result.latency.p50_ms
        result.repeat_p50_ratio = ratio
        if not 1 / REPEAT_DISAGREEMENT <= ratio <= REPEAT_DISAGREEMENT:
            reasons.append(f"the repeat at batch {result.batch_size} measured p50 {same[0].p50_ms:.3g} ms against "
                           f"{result.latency.p50_ms:.3g} ms in the latency loop")
    if reasons and result.latency is not None:
        result.latency = replace(result.latency, noisy=True)
        result.notes.append("noisy: " + "; ".join(reasons))


def _probe(candidate: Candidate, batch: Batch) -> float:
    """One checked call (it doubles as a warm-up); returns its seconds."""
    sync, check = _sync(candidate), _checker(candidate.name)
    start = time.perf_counter()
    try:
        output = candidate.predict_fn(batch)
        if sync is not None:
            sync()
    except MeasurementError:
        raise
    except Exception as error:
        raise MeasurementError(f"{candidate.name}: predict raised {type(error).__name__}: {error}") from error
    seconds = time.perf_counter() - start
    check(output, batch)
    return seconds


def _sweep(candidate: Candidate, inputs: Inputs, size: int, workload: Workload, call_s: tuple[float, float] | None,
           result: Measurement, deadline: float | None) -> tuple[Any, tuple[float, float] | None]:
    """Time one sweep point unless one call costs more than its share of the budget (or the
    deadline is near). `call_s` is (seconds, rows) of the last known call, to extrapolate from."""
    budget = workload.sweep_budget_s
    allowed = SWEEP_MAX_CALL_SHARE * budget
    remaining = _remaining(deadline)

    def skip(why: str):
        result.skipped_batch_sizes.append(size)
        result.notes.append(f"throughput at batch {size} skipped: {why}")
        return None, call_s

    estimate = call_s[0] * size / max(call_s[1], 1.0) if call_s else None
    if estimate is not None and estimate > 4 * allowed:
        return skip(f"one call would take ~{estimate:.2g} s (extrapolated), over {SWEEP_MAX_CALL_SHARE:.0%} of the "
                    f"{budget:g} s sweep budget; raise Workload.sweep_budget_s to include it")
    if remaining < 2 * budget:
        return skip(f"the study's time limit leaves {max(remaining, 0):.1f} s")
    batch_list = make_batches(inputs, size, name=candidate.name)
    seconds = _probe(candidate, batch_list[0])
    if seconds > allowed:  # the first call at a new shape can be slow: look once more
        seconds = min(seconds, _probe(candidate, batch_list[0]))
    call_s = (seconds, float(size))
    if seconds > allowed:
        return skip(f"one call takes {seconds:.2g} s, over {SWEEP_MAX_CALL_SHARE:.0%} of the {budget:g} s sweep "
                    f"budget; raise Workload.sweep_budget_s to include it")
    fits = int(budget / max(seconds, 1e-9))
    run = _time(candidate, batch_list, workload, budget_s=budget,
                warmup=min(workload.warmup, 3) if seconds * 20 < budget else 1,
                min_samples=max(SWEEP_MIN_SAMPLES, min(workload.min_samples, 20, fits)))
    if len(run.samples_ns):
        call_s = (float(np.median(run.samples_ns)) / 1e9, float(size))
    return run, call_s


def _cold(candidate: Candidate, inputs: Inputs, batches: list[Batch], workload: Workload, result: Measurement,
          deadline: float | None) -> None:
    """Peak memory and cold start in fresh processes, as many repeats as the deadline allows."""
    name = candidate.name
    measured = list(result.sweep)
    probe = batches[:1] + [make_batches(inputs, p.batch_size, max_batches=1, name=name)[0] for p in measured]
    repeats = workload.cold_start_repeats if workload.cold_start else 1
    per_run = COLD_START_OVERHEAD_S + sum(p.p50_ms for p in measured) / 1e3
    if result.latency is not None:
        per_run += result.latency.p50_ms / 1e3
    remaining = _remaining(deadline)
    fit = repeats if math.isinf(remaining) else int(remaining // per_run)
    if fit < 1:
        result.notes.append(f"memory and cold start skipped: the study's time limit leaves too little time "
                            f"(~{per_run:.1f} s per fresh process)")
        return
    if fit < repeats:
        result.notes.append(f"cold start: {fit} of {repeats} repeats (the study's time limit)")
        repeats = fit
    try:
        cold = cold_start(candidate.loader, candidate.artifact_path, candidate.loader_options, probe,
                          repeats=repeats, name=name, threads=workload.threads)
    except KeyboardInterrupt:
        _incomplete(result, "cold start")
        return
    except ColdStartError as error:
        # Keep the latency figures already measured: the row says why these two are missing.
        first_line = str(error).strip().splitlines()[0]
        result.notes.append(f"memory and cold start failed in a fresh process: {first_line}")
        result.cold_start_error = str(error)
        return
    if not workload.cold_start:  # one run, for memory only: its start-up figures are not cold-start data
        cold = replace(cold, cold_start_ms=None, cold_start_min_ms=None, cold_start_max_ms=None, repeats=0)
    if not workload.memory:
        cold = replace(cold, peak_rss_mb=None, start_rss_mb=None)
    result.cold = cold


def _sweep_point(batch_size: int, samples_ns: np.ndarray) -> SweepPoint:
    ms = samples_ns / 1e6
    p50, p90, p99 = np.quantile(ms, [0.5, 0.9, 0.99])
    return SweepPoint(batch_size=batch_size, samples=int(len(ms)), p50_ms=float(p50), p90_ms=float(p90),
                      p99_ms=float(p99), mean_ms=float(ms.mean()),
                      throughput_per_s=float(batch_size * len(ms) / (samples_ns.sum() / 1e9)),
                      samples_ns=samples_ns.tolist())


def _incomplete(result: Measurement, phase: str) -> Measurement:
    result.complete = False
    result.notes.append(f"interrupted during {phase}: the figures cover what was measured before")
    return result
