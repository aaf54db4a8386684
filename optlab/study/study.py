"""A Study: run recipes against a baseline, store every result at once, hand back a DataFrame.

    study = Study(model, data, [Quantize("dynamic-int8"), Compile()], workload=Workload.smoke(),
                  results_dir="results/digits")
    df = study.run()                    # baseline row + one row per recipe (errors included)
    study.recommend(max_p99_ms=5, max_quality_drop=0.01)

Re-running skips every row stored with a matching fingerprint (recipe, model bytes, data,
workload, machine and library versions), so a killed study resumes where it stopped.
Error rows are stored too and are NOT re-run by default (an UnsupportedRecipe fails the
same way each time; a changed environment changes the fingerprint anyway): pass
`retry_errors=True` to run them again.

A study tells the truth under pressure: `time_limit_s` bounds the whole run (no candidate
starts after it; one still running is stopped shortly after), Ctrl-C stops it too, and in
both cases `results` names what was not run (`status="skipped"` rows, never stored, so the
next run produces them). One results folder holds one study (baseline and data) and one
run at a time (a lock); dependencies' warnings go into each row's notes unless `verbose`.
"""
from __future__ import annotations

import functools
import math
import os
import re
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from optlab.models.candidate import Candidate
from optlab.recipes.recipe import Recipe
from optlab.study import contenders
from optlab.study import costs as costs_module
from optlab.study import fingerprint as fp
from optlab.study import frontier as frontier_module
from optlab.study.executor import (
    BASELINE_RECIPE_JSON,
    Executor,
    InProcessExecutor,
    Task,
    TaskContext,
    run_task,
    skipped_row,
)
from optlab.study.hardstop import HardStop, ctrl_c_remembered
from optlab.study.store import Store

# A candidate still running when the time limit passes is stopped this long after it
# (a share of the limit, at least HARD_STOP_MIN_S), then the study returns what it has.
HARD_STOP_SHARE = 0.2
HARD_STOP_MIN_S = 2.0

# Always present in `Study.results`, in this order; every other column follows.
COLUMNS = (
    "candidate", "recipe", "family", "runtime", "device", "status", "error", "source",
    "metric", "quality", "quality_drop", "quality_drop_ci_low", "quality_drop_ci_high", "agreement",
    "p50_ms", "p95_ms", "p99_ms", "throughput_per_s", "size_bytes", "size_mb", "peak_rss_mb", "cold_start_ms",
    "price_per_hour_usd", "utilisation", "cost_per_1k_usd", "cost_per_1m_usd",
    "recipe_json", "fingerprint", "cached",
)


@dataclass(frozen=True)
class StudyEvent:
    """Sent to subscribers once per finished candidate (and per row loaded from the store
    or as a reference). `row` includes cost columns; `results` is `study.results` now."""

    row: dict[str, Any]
    results: Any  # pandas.DataFrame
    done: int
    total: int
    cached: bool

    @property
    def status(self) -> str:
        return self.row.get("status", "")

    @property
    def candidate(self) -> str:
        return self.row.get("candidate", "")


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:limit] or "candidate"


class Study:
    """Recipes against one baseline on one dataset and workload; results in `results_dir`.

    baseline: a Candidate, or a torch.nn.Module (wrapped with `zoo.baseline`).
    executor: anything with `run(fn, tasks) -> iterable of rows` (see optlab.study.executor).
    price_per_hour_usd: a number, a preset name from `optlab.study.costs.PRICES`, or a Price;
    None picks "cpu-small" (or "gpu-h100" for a CUDA baseline). Costs are derived columns:
    changing the price never re-runs anything.
    time_limit_s: bound on the whole run (seconds), counted from `time_limit_from` (a
    `time.monotonic()` instant; default: when run() starts), keeping `time_limit_reserve_s`
    for the caller's own work afterwards (the CLI writes its report then).
    verbose: print dependencies' warnings instead of counting them into each row's notes.
    lock_timeout_s: how long run() waits for another process holding the results folder.
    """

    def __init__(self, baseline: Any, data: Any, recipes: Iterable[Recipe] | Recipe = (), *, workload: Any = None,
                 results_dir: str | os.PathLike = "optlab-results", executor: Executor | None = None,
                 inputs: Any = None, price_per_hour_usd: Any = None,
                 utilisation: float = costs_module.DEFAULT_UTILISATION, requests_per_s: float | None = None,
                 retry_errors: bool = False, progress: bool = True, time_limit_s: float | None = None,
                 time_limit_from: float | None = None, time_limit_reserve_s: float = 0.0, verbose: bool = False,
                 lock_timeout_s: float = 0.0):
        if not isinstance(baseline, Candidate):
            if not hasattr(baseline, "state_dict"):
                raise TypeError(f"baseline must be a Candidate or a torch.nn.Module; got {type(baseline).__name__}")
            from optlab.models import zoo

            baseline = zoo.baseline(baseline)
        if not hasattr(data, "test") or not hasattr(data, "fingerprint"):
            raise TypeError(f"data must be an optlab Dataset (optlab.data.load(...)); got {type(data).__name__}")
        if workload is None:
            from optlab.instruments.latency import Workload

            workload = Workload()
        if time_limit_s is not None and (isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float))
                                         or not math.isfinite(time_limit_s) or time_limit_s <= 0):
            raise ValueError(f"time_limit_s={time_limit_s!r} must be a positive number of seconds (or None: no limit)")
        if not isinstance(time_limit_reserve_s, (int, float)) or not time_limit_reserve_s >= 0:
            raise ValueError(f"time_limit_reserve_s={time_limit_reserve_s!r} must be >= 0 seconds")
        if not isinstance(lock_timeout_s, (int, float)) or lock_timeout_s < 0:
            raise ValueError(f"lock_timeout_s={lock_timeout_s!r} must be >= 0 seconds")
        if executor is not None and not callable(getattr(executor, "run", None)):
            raise TypeError(
                "executor must have a run(fn, tasks) method yielding rows (see optlab.study.executor.Executor)"
            )
        self.baseline = baseline
        self.data = data
        self.workload = workload
        self.inputs = inputs
        self.executor = executor or InProcessExecutor()
        self.retry_errors = retry_errors
        self.progress = progress
        self.time_limit_s = None if time_limit_s is None else float(time_limit_s)
        self.time_limit_from, self.time_limit_reserve_s = time_limit_from, float(time_limit_reserve_s)
        self.verbose = bool(verbose)
        self.lock_timeout_s = float(lock_timeout_s)
        self.stop_reason: str | None = None  # "time limit" or "interrupted" when the last run stopped early
        self._skipped: dict[str, dict[str, Any]] = {}  # fingerprint -> skipped row (never stored)
        self._hard_stop = HardStop()
        self.results_dir = Path(results_dir)
        self.store = Store(self.results_dir)
        self.recipes: list[Recipe] = []
        self._rows: dict[str, dict[str, Any]] = {}  # fingerprint -> stored local row
        self._reference: list[dict[str, Any]] = []
        self._serving = None  # serving figures per candidate (optlab.study.serving), joined onto results
        self._subscribers: list[Callable[[StudyEvent], Any]] = []
        self.callback_errors: list[str] = []
        self._warned: set[int] = set()
        self._model_fp: str | None = None
        self._running = False
        self.set_price(price_per_hour_usd, utilisation=utilisation, requests_per_s=requests_per_s)
        self.add(recipes)

    # -- configuration ------------------------------------------------------------------
    def add(self, recipes: Iterable[Recipe] | Recipe) -> "Study":
        """Add recipes (duplicates are ignored); they run on the next `run()`."""
        if isinstance(recipes, Recipe):
            recipes = [recipes]
        known = {r.to_json() for r in self.recipes}
        for recipe in recipes:
            if not isinstance(recipe, Recipe):
                raise TypeError(f"a study takes recipes (Quantize, Compile, Prune, Distill, Chain); got {recipe!r}")
            if recipe.to_json() not in known:
                self.recipes.append(recipe)
                known.add(recipe.to_json())
        return self

    def set_price(self, price_per_hour_usd: Any = None, *, utilisation: float = costs_module.DEFAULT_UTILISATION,
                  requests_per_s: float | None = None) -> "Study":
        """Change the cost assumptions (a derived view: nothing is re-measured)."""
        if price_per_hour_usd is None:
            gpu = str(self.baseline.device).startswith("cuda")
            price_per_hour_usd = "gpu-h100" if gpu else "cpu-small"
        self.price = costs_module.price(price_per_hour_usd)
        costs_module.with_costs(_empty_frame(), self.price, utilisation=utilisation, requests_per_s=requests_per_s)
        self.utilisation, self.requests_per_s = utilisation, requests_per_s
        return self

    def subscribe(self, callback: Callable[[StudyEvent], Any]) -> Callable[[], None]:
        """Call `callback(event: StudyEvent)` after every finished row; returns an unsubscribe
        function. A callback that raises is reported as a warning and never stops the study."""
        if not callable(callback):
            raise TypeError("subscribe() needs a callable taking one StudyEvent")
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    # -- fingerprints -------------------------------------------------------------------
    def _key(self, recipe_json: str) -> dict[str, Any]:
        if self._model_fp is None:
            self._model_fp = fp.model_fingerprint(self.baseline)
        return fp.key(recipe_json=recipe_json, model=self._model_fp, data=str(self.data.fingerprint),
                      workload=self.workload, machine_info=fp.machine())

    def _tasks(self) -> list[tuple[Task, dict[str, Any]]]:
        tasks = []
        for recipe in [None, *self.recipes]:
            key = self._key(BASELINE_RECIPE_JSON if recipe is None else recipe.to_json())
            digest = fp.fingerprint(key)
            name = "baseline" if recipe is None else recipe.name
            workdir = self.results_dir / "artifacts" / f"{_slug(name)}-{digest[:12]}"
            tasks.append((Task(recipe, digest, workdir), key))
        return tasks

    def _cached(self, fingerprint: str, retry_errors: bool) -> dict[str, Any] | None:
        record = self.store.get(fingerprint)
        if record is None or record.get("fingerprint") != fingerprint:
            return None
        row = record["row"]
        if row.get("status") == "reference" or row.get("source", "local") != "local":
            return None  # reference figures never stand in for a local measurement
        if row.get("status") == "error" and retry_errors:
            return None
        return row

    # -- running ------------------------------------------------------------------------
    def run(self, recipes: Iterable[Recipe] | Recipe | None = None, *, retry_errors: bool | None = None):
        """Add `recipes` (if given), then produce every missing row: the baseline and each
        recipe not stored yet. Returns `results`.

        With `time_limit_s`, it returns when the limit is reached; Ctrl-C stops it too
        (KeyboardInterrupt is raised again). Either way what finished is stored and the
        rows not produced appear in `results` with status "skipped"; `stop_reason` says why.
        """
        if self._running:
            raise RuntimeError("this study is already running (run() was called from a callback?); wait for it")
        if recipes is not None:
            self.add(recipes)
        retry = self.retry_errors if retry_errors is None else retry_errors
        deadline = None
        if self.time_limit_s is not None:
            origin = time.monotonic() if self.time_limit_from is None else self.time_limit_from
            deadline = origin + self.time_limit_s - self.time_limit_reserve_s
        self._running = True
        self.stop_reason, self._skipped = None, {}
        try:
            with self.store.lock(self.lock_timeout_s):
                self._model_fp = None  # the model may have changed in place since the last run
                self._bind()
                tasks = self._tasks()
                pending, cached = [], []
                for task, key in tasks:
                    row = self._cached(task.fingerprint, retry)
                    (cached if row is not None else pending).append((task, key) if row is None else row)
                self._rows = {row["fingerprint"]: {**row, "cached": True} for row in cached}
                total, done = len(tasks), len(cached)
                for row in cached:
                    self._emit(row, done, total, cached=True)
                if pending:
                    self._run_pending(pending, done, total, deadline)
        finally:
            self._running = False
        return self.results

    def _bind(self) -> None:
        """One folder, one study: refuse a folder that holds another baseline's or data set's rows."""
        model = self._key(BASELINE_RECIPE_JSON)["model"]
        name = self.baseline.name or "baseline"
        subfolder = self.results_dir / f"{_slug(name, 40)}-{model[:8]}"
        self.store.bind({"baseline": model, "data": str(self.data.fingerprint), "name": name},
                        fix=f", e.g. results_dir={os.fspath(subfolder)!r}")

    def _run_pending(self, pending: list[tuple[Task, dict[str, Any]]], done: int, total: int,
                     deadline: float | None) -> None:
        from tqdm.auto import tqdm

        keys = {task.fingerprint: key for task, key in pending}
        limit_note = (f"not run: the study's time limit ({self.time_limit_s:.3g} s) was reached"
                      if self.time_limit_s is not None else "not run: the study stopped early")
        context = TaskContext(self.baseline, self.data, self.workload, self._inputs(), None,
                              deadline=deadline, verbose=self.verbose, stop_note=limit_note)
        bar = tqdm(total=total, initial=done, desc="optlab study", unit="candidate", disable=not self.progress)
        elapsed: list[float] = []
        try:
            grace = max(HARD_STOP_MIN_S, HARD_STOP_SHARE * (self.time_limit_s or 0.0))
            with self._hard_stop.armed(None if deadline is None else deadline + grace), \
                    ctrl_c_remembered() as ctrl_c:
                context.baseline_outputs = self._baseline_outputs()  # a slow model's pass counts against the limit
                rows = self.executor.run(functools.partial(run_task, context), [task for task, _ in pending])
                for row in rows:
                    fingerprint = row.get("fingerprint")
                    if fingerprint not in keys:
                        raise RuntimeError(f"the executor returned a row for an unknown task {fingerprint!r}")
                    if row.get("status") == "skipped":  # claims nothing: shown, never stored
                        keys.pop(fingerprint)
                        self._skipped[fingerprint] = row
                        self.stop_reason = "time limit"
                        continue
                    self.store.put(fingerprint, row, keys.pop(fingerprint))
                    self._rows[fingerprint] = {**row, "cached": False}
                    elapsed.append(float(row.get("elapsed_s") or 0.0))
                    context.min_start_s = 0.5 * sorted(elapsed)[len(elapsed) // 2]  # don't start what can't finish
                    done += 1
                    bar.set_postfix_str(f"{row.get('candidate')}: {row.get('status')}", refresh=False)
                    bar.update(1)
                    self._emit(row, done, total, cached=False)
                    if ctrl_c["requested"]:  # its KeyboardInterrupt was swallowed where it landed: stop here
                        raise KeyboardInterrupt("optlab: Ctrl-C")
        except KeyboardInterrupt:
            self.stop_reason = "time limit" if self._hard_stop.fired else "interrupted"
            note = limit_note if self._hard_stop.fired else "not run: the study was interrupted (Ctrl-C)"
            for task, _ in pending:
                if task.fingerprint in keys:
                    self._skipped[task.fingerprint] = skipped_row(context, task, note)
            bar.write(f"optlab: study {'stopped at its time limit' if self._hard_stop.fired else 'interrupted'}; "
                      f"{done} of {total} rows are stored in {self.results_dir} (run() again to continue); "
                      f"not run: {', '.join(self.skipped)}")
            if not self._hard_stop.fired:
                raise
        finally:
            bar.close()
        if self.stop_reason == "time limit" and not self._hard_stop.fired and self.progress:
            print(f"optlab: the study's time limit ({self.time_limit_s:.3g} s) was reached; not run: "
                  f"{', '.join(self.skipped)} (run() again to continue)")

    @property
    def skipped(self) -> list[str]:
        """Names of the candidates the last run did not produce (time limit or Ctrl-C)."""
        order = {task.fingerprint: i for i, (task, _) in enumerate(self._tasks())} if self._skipped else {}
        rows = sorted(self._skipped.values(), key=lambda r: order.get(r["fingerprint"], len(order)))
        return [str(r.get("candidate")) for r in rows]

    def _inputs(self) -> Any:
        if self.inputs is not None:
            return self.inputs
        return self.data.requests if getattr(self.data, "requests", None) else self.data.test.inputs

    def _baseline_outputs(self) -> Any:
        """The baseline's test-split outputs, once per run (every candidate is compared to them)."""
        from optlab.instruments.quality import reference

        return reference(self.baseline, self.data, "test")

    def _emit(self, row: dict[str, Any], done: int, total: int, *, cached: bool) -> None:
        if not self._subscribers:
            return
        results = self.results
        match = results[results["fingerprint"] == row.get("fingerprint")] if "fingerprint" in results else results[:0]
        full_row = match.iloc[-1].to_dict() if len(match) else dict(row)
        event = StudyEvent(full_row, results, done, total, cached)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception as error:  # noqa: BLE001 - a broken widget must not kill the study
                message = f"{getattr(callback, '__name__', callback)!s}: {type(error).__name__}: {error}"
                self.callback_errors.append(message + "\n" + traceback.format_exc())
                if id(callback) not in self._warned:  # once per callback, not once per row
                    self._warned.add(id(callback))
                    warnings.warn(f"optlab: a study subscriber raised (ignored; the study goes on; all errors "
                                  f"are in study.callback_errors): {message}", RuntimeWarning, stacklevel=3)

    # -- results ------------------------------------------------------------------------
    @property
    def results(self):
        """All rows so far (baseline first, then recipes in order, then reference rows),
        with cost columns from the current price. A fresh DataFrame each time."""
        produced = {**self._skipped, **self._rows}
        order = {task.fingerprint: i for i, (task, _) in enumerate(self._tasks())} if produced else {}
        local = sorted((r for f, r in produced.items() if f in order), key=lambda r: order[r["fingerprint"]])
        return self._frame(local + self._reference)

    def serve(self, requests=None, *, max_p99_ms: float = 10.0, **options):
        """Serve each successful candidate in-process and find its throughput at the SLA (p99 <=
        `max_p99_ms` under open-loop load, per batching policy); `results` gains the serving columns
        and the explorer can draw them. See `optlab.study.serving.serve` for the options."""
        from optlab.study.serving import serve

        return serve(self, requests, max_p99_ms=max_p99_ms, **options)

    def set_serving(self, table) -> None:
        """Attach serving figures (one row per candidate; see `optlab.study.serving.COLUMNS`): a
        derived view, kept in memory, replaced per candidate, and announced to subscribers."""
        import pandas as pd

        if "candidate" not in getattr(table, "columns", ()):
            raise ValueError("set_serving() needs a DataFrame with a 'candidate' column (see Study.serve)")
        old = self._serving
        merged = table if old is None else pd.concat([old[~old["candidate"].isin(table["candidate"])], table])
        self._serving = merged.reset_index(drop=True)
        if len(table) and self._subscribers:  # the frame is only built for someone to hear about it
            first = self.results
            match = first[first["candidate"].isin(table["candidate"])]
            if len(match):
                self._emit(match.iloc[-1].to_dict(), len(self._rows), len(self.recipes) + 1, cached=True)

    def _frame(self, rows: list[dict[str, Any]]):
        import pandas as pd

        df = pd.DataFrame(rows) if rows else _empty_frame()
        if self._serving is not None and len(df):
            extra = self._serving.drop(columns=[c for c in self._serving.columns
                                                if c != "candidate" and c in df.columns])
            df = df.merge(extra, on="candidate", how="left")
        for column in COLUMNS:
            if column not in df.columns:
                df[column] = None
        prices = [r.get("reference_price_per_hour_usd") or self.price.price_per_hour_usd for r in rows]
        df = costs_module.with_costs(df, prices if rows else self.price, utilisation=self.utilisation,
                                     requests_per_s=self.requests_per_s)
        df = df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]
        return df.reset_index(drop=True)

    def load_reference(self, path: str | os.PathLike, label: str, *, price_per_hour_usd: Any = None):
        """Rows from another machine's results folder (read-only), shown as status="reference"
        with `source=label`; they are never used as cache hits. Returns those rows."""
        if not isinstance(label, str) or not label.strip():
            raise ValueError("load_reference() needs a label naming where the figures come from, e.g. label='H100'")
        store = Store(path, read_only=True)
        reference_price = None if price_per_hour_usd is None else costs_module.price(price_per_hour_usd)
        loaded = []
        for record in store.records():
            row = dict(record["row"])
            if row.get("status") not in ("ok", "reference"):
                continue  # another machine's errors say nothing about this one
            row.update(status="reference", source=label, cached=False, reference_dir=os.fspath(Path(path)),
                       candidate=f"{row.get('candidate')} [{label}]",
                       reference_price_per_hour_usd=None if reference_price is None
                       else reference_price.price_per_hour_usd)
            loaded.append(row)
        if not loaded:
            warnings.warn(f"no successful rows in reference folder {path}", stacklevel=2)
        self._reference = [r for r in self._reference if r.get("source") != label] + loaded
        for row in loaded:
            self._emit(row, len(self._rows), len(self.recipes) + 1, cached=True)
        frame = self.results
        return frame[frame["source"] == label].reset_index(drop=True)

    # -- the trade-off --------------------------------------------------------------------
    def frontier(self, x: str = "p99_ms", y: str = "quality", **options):
        """The Pareto-optimal rows (minimise x, maximise y); see `optlab.study.frontier.pareto_front`."""
        return frontier_module.pareto_front(self._nonempty("frontier"), x, y, **options)

    def recommend(self, *, max_p99_ms: float | None = None, max_quality_drop: float | None = None,
                  objective: str = "cost", **options) -> frontier_module.Recommendation:
        """The best candidate under the constraints (see `optlab.study.frontier.recommend`), the
        winner re-timed side by side with the runner-up and the baseline first (`retime=False`
        skips that; see `optlab.study.contenders`)."""
        return contenders.recommend(self, self._nonempty("recommend"), max_p99_ms=max_p99_ms,
                                    max_quality_drop=max_quality_drop, objective=objective, **options)

    def _nonempty(self, what: str):
        df = self.results
        if len(df) == 0:
            raise ValueError(f"{what}(): the study has no results yet; call study.run() first")
        return df

    def __repr__(self) -> str:
        return (f"Study({len(self.recipes)} recipes, {len(self._rows)} rows done, results_dir="
                f"{os.fspath(self.results_dir)!r}, executor={self.executor!r})")


def _empty_frame():
    import pandas as pd

    return pd.DataFrame({column: pd.Series(dtype="object") for column in COLUMNS})
