"""How a Study's candidates get built, measured and evaluated: the executor seam.

A Study turns each pending recipe into a `Task` and hands the tasks, with one function
`run_task(context, task) -> row`, to an executor. The default runs them here, one after
the other. Any object with the same `run(fn, tasks)` method can take its place (a process
pool, a cluster engine) as long as it yields each finished row as soon as it has it:
the Study stores the row and emits its event in this process, in arrival order.

Each task's dependency chatter (Python warnings, log records, ONNX Runtime's C-level log
lines) is captured, counted and de-duplicated into the row's `notes` and `warnings_count`
instead of flooding the terminal, unless the context is verbose. A task that starts after
the context's deadline (a study's time limit) returns a `status="skipped"` row, which
claims no measurement and is never stored.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

from optlab.instruments.environment import environment
from optlab.instruments.latency import measure
from optlab.instruments.quality import evaluate
from optlab.models.candidate import Candidate
from optlab.recipes.recipe import Recipe
from optlab.study.captured import capture
from optlab.techniques import registry

BASELINE_RECIPE_JSON = '{"kind": "baseline"}'
MAX_TRACEBACK_CHARS = 4000


@dataclass(frozen=True)
class Task:
    """One candidate to produce: `recipe=None` is the baseline itself."""

    recipe: Recipe | None
    fingerprint: str
    workdir: Path

    @property
    def name(self) -> str:
        return "baseline" if self.recipe is None else self.recipe.name


@dataclass
class TaskContext:
    """What every task of one run shares (built once per `Study.run`)."""

    baseline: Candidate
    data: Any  # optlab.data.Dataset
    workload: Any  # optlab.instruments.latency.Workload
    inputs: Any  # what `measure` times: data.requests by default
    baseline_outputs: Any  # the baseline's test-split outputs, computed once
    deadline: float | None = None  # time.monotonic() instant after which no task starts (a study's time limit)
    min_start_s: float = 0.0  # no task starts with less than this left before the deadline (a typical task's share)
    verbose: bool = False  # print dependencies' warnings as they come instead of capturing them
    stop_note: str = "not run: the study's time limit was reached"


@runtime_checkable
class Executor(Protocol):
    """Runs `fn(task)` for every task and yields each returned row dict as it finishes
    (any order; every row carries its task's `fingerprint`). `fn` never raises for a
    failing recipe (it returns an error row); KeyboardInterrupt must propagate."""

    def run(self, fn: Callable[[Task], dict[str, Any]], tasks: Sequence[Task]) -> Iterable[dict[str, Any]]: ...


class InProcessExecutor:
    """The default: tasks one after the other in this process (threads are the workload's)."""

    def run(self, fn: Callable[[Task], dict[str, Any]], tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        for task in tasks:
            yield fn(task)

    def __repr__(self) -> str:
        return "InProcessExecutor()"


def _environment_row(device: str) -> dict[str, Any]:
    try:

        return environment(device).to_dict()
    except Exception:  # noqa: BLE001 - describing the machine must never hide the real error
        return {"device": device}


def recipe_fields(recipe: Recipe | None) -> dict[str, Any]:
    if recipe is None:
        return {"recipe": "baseline", "recipe_json": BASELINE_RECIPE_JSON, "family": "baseline"}
    return {"recipe": recipe.name, "recipe_json": recipe.to_json(), "family": type(recipe).family}


def skipped_row(context: TaskContext, task: Task, note: str) -> dict[str, Any]:
    """A row for a candidate that was not produced (time limit, interruption): no figures."""
    row = {"candidate": context.baseline.name or "baseline" if task.recipe is None else task.name,
           "status": "skipped", "error": note, "notes": note, "runtime": getattr(task.recipe, "runtime", None),
           "fingerprint": task.fingerprint, "source": "local"}
    row.update(recipe_fields(task.recipe))
    return row


def run_task(context: TaskContext, task: Task) -> dict[str, Any]:
    """Apply the recipe, measure and evaluate the candidate -> one results row.

    Any Exception (UnsupportedRecipe included) becomes an error row naming its stage, type
    and message; KeyboardInterrupt, and a measurement cut short by one, propagate.
    Dependencies' warnings are captured into the row's notes (see `optlab.study.captured`).
    """
    if context.deadline is not None and time.monotonic() >= context.deadline - context.min_start_s:
        return skipped_row(context, task, context.stop_note)
    with capture(verbose=context.verbose) as captured:
        row = _produce(context, task)
    row["warnings_count"] = captured.count
    if captured.count:
        row["notes"] = "; ".join(part for part in (row.get("notes"), captured.summary()) if part)
    return row


def _produce(context: TaskContext, task: Task) -> dict[str, Any]:

    started = time.perf_counter()
    stage, candidate, row = "apply", None, {}
    timings: dict[str, float] = {}
    try:
        if task.recipe is None:
            candidate = context.baseline
        else:
            task.workdir.mkdir(parents=True, exist_ok=True)
            candidate = registry.apply(task.recipe, context.baseline.model, context.data,
                                             threads=context.workload.threads, workdir=task.workdir)
        timings["apply_s"] = time.perf_counter() - started
        stage = "measure"
        measurement = measure(candidate, context.inputs, context.workload, deadline=context.deadline)
        if not measurement.complete:
            raise KeyboardInterrupt(f"measuring {task.name} was interrupted")
        timings["measure_s"] = time.perf_counter() - started - timings["apply_s"]
        stage = "evaluate"
        # the baseline's test outputs were computed once for the whole run: not predicted again
        scored = context.baseline_outputs if task.recipe is None and context.baseline_outputs is not None else candidate
        quality = evaluate(scored, context.data, context.baseline_outputs)
        timings["evaluate_s"] = time.perf_counter() - started - timings["apply_s"] - timings["measure_s"]
        row.update(candidate.describe())
        row.update(measurement.to_row())
        row.update(quality.to_row())
        split_figures = getattr(candidate, "split_figures", None)  # e.g. a cascade's escalated share
        if callable(split_figures):
            row.update(split_figures(context.data, "test"))
        row.update(status="ok", error=None, error_type=None, error_stage=None, error_traceback=None)
    except Exception as error:  # noqa: BLE001 - isolating failures is the point
        row = _environment_row(str(getattr(candidate, "device", None) or "cpu"))
        row.update(candidate=task.name, status="error", error=f"{type(error).__name__}: {error}",
                   error_type=type(error).__name__, error_stage=stage,
                   error_traceback=traceback.format_exc()[-MAX_TRACEBACK_CHARS:])
        row["runtime"] = getattr(task.recipe, "runtime", None)
        if candidate is not None:
            row.update({k: v for k, v in candidate.describe().items() if k != "candidate"})
    row.update(recipe_fields(task.recipe))
    if task.recipe is None:
        row["candidate"] = context.baseline.name or "baseline"
    elif row.get("candidate") in (None, ""):
        row["candidate"] = task.name
    row.update(timings, elapsed_s=time.perf_counter() - started, fingerprint=task.fingerprint, source="local")
    return row
