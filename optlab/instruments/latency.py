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
import math
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from optlab.data.datasets import Batch
from optlab.instruments.batches import Inputs, _checker, _pool, _rows, make_batches  # noqa: F401 - re-exported
from optlab.instruments.coldstart import ColdStartError, cold_start
from optlab.instruments.contention import Busy, BusyWindow
from optlab.instruments.environment import environment
from optlab.instruments.footprint import footprint
from optlab.instruments.measurement import (  # noqa: F401 - re-exported: callers import them from here
    Measurement,
    MeasurementError,
    SweepPoint,
    Workload,
)
from optlab.instruments.timing import TimedRun, summarize, time_calls
from optlab.models.candidate import Candidate

# torch is imported inside the functions that use it: a heavy optional dependency that timing an ONNX
# Runtime or OpenVINO candidate must not load.

SWEEP_MAX_CALL_SHARE = 0.25  # no sweep call may cost more than this share of sweep_budget_s
SWEEP_MIN_SAMPLES = 5  # a sweep point that cannot get this many calls in its budget is skipped
REPEAT_DISAGREEMENT = 1.5  # latency p50 and the sweep's p50 at the same batch size differ by more: noisy
COLD_START_OVERHEAD_S = 1.5  # a fresh interpreter plus a runtime import, for the time-limit estimate


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
    result.busy_ray_idle_cpu_share = busy.ray_idle_share
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
