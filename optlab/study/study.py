"""A Study: run recipes against a baseline, store every result at once, hand back a DataFrame.

    study = Study(model, data, [Quantize("dynamic-int8"), Compile()], workload=Workload.smoke(),
                  results_dir="results/digits")
    df = study.run()                    # baseline row + one row per recipe (errors included)
    study.recommend(max_p99_ms=5, max_quality_drop=0.01)

Re-running skips every row stored with a matching fingerprint (recipe, model bytes, data,
workload, machine and library versions), so a killed study resumes where it stopped.
Error rows are stored too and are NOT re-run by default (an UnsupportedRecipe fails the
same way each time; a changed environment changes the fingerprint anyway): pass
`options=RunOptions(retry_errors=True)` (or `run(retry_errors=True)`) to run them again.

A Study runs and stores; what it is given comes in a few frozen values (`RunOptions`: limits,
retries, executor; `Pricing`: price, utilisation, traffic), and what it shows is a pure
function of its stored rows (`optlab.study.table.results_table`), so pricing, subscribers'
events and `results` agree. Serving figures are computed elsewhere (`optlab.study.serving`)
and kept here as extra figures joined by candidate.

A study tells the truth under pressure: `time_limit_s` bounds the whole run (no candidate
starts after it; one still running is stopped shortly after), Ctrl-C stops it too, and in
both cases `results` names what was not run (`status="skipped"` rows, never stored, so the
next run produces them). One results folder holds one study (baseline and data) and one
run at a time (a lock); dependencies' warnings go into each row's notes unless `verbose`.
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from optlab.instruments.latency import Workload
from optlab.instruments.quality import reference as quality_reference
from optlab.models import zoo
from optlab.models.candidate import Candidate
from optlab.recipes.recipe import Recipe
from optlab.study import contenders
from optlab.study import fingerprint as fp
from optlab.study import frontier as frontier_module
from optlab.study import serving as serving_module
from optlab.study.events import StudyEvent, Subscribers
from optlab.study.executor import (
    BASELINE_RECIPE_JSON,
    InProcessExecutor,
    Task,
    TaskContext,
    run_task,
    skipped_row,
)
from optlab.study.hardstop import HardStop, ctrl_c_remembered
from optlab.study.options import RUN_KEYWORDS, RunOptions, from_keywords
from optlab.study.progress import progress_bar
from optlab.study.store import Store, reference_rows, slug
from optlab.study.table import COLUMNS, Pricing, merge_extra, results_table

__all__ = ["COLUMNS", "Pricing", "RunOptions", "Study", "StudyEvent"]

# A candidate still running when the time limit passes is stopped this long after it
# (a share of the limit, at least HARD_STOP_MIN_S), then the study returns what it has.
HARD_STOP_SHARE = 0.2
HARD_STOP_MIN_S = 2.0


class Study:
    """Recipes against one baseline on one dataset and workload; results in `results_dir`.

    baseline: a Candidate, or a torch.nn.Module (wrapped with `zoo.baseline`).
    options: a `RunOptions` (time limit, retries, progress, executor, timed inputs, lock wait).
    pricing: a `Pricing` (or a bare price: a number, a preset of `optlab.study.costs.PRICES`, a
    Price); by default "cpu-small" (or "gpu-h100" for a CUDA baseline). Costs are derived
    columns: changing the price never re-runs anything.
    The keywords that `options` and `pricing` replace (time_limit_s=..., price_per_hour_usd=...,
    executor=..., inputs=..., ...) still work and warn (DeprecationWarning).
    """

    def __init__(self, baseline: Any, data: Any, recipes: Iterable[Recipe] | Recipe = (), *, workload: Any = None,
                 results_dir: str | os.PathLike = "optlab-results", options: RunOptions | None = None,
                 pricing: Pricing | Any = None, **deprecated: Any):
        if not isinstance(baseline, Candidate):
            if not hasattr(baseline, "state_dict"):
                raise TypeError(f"baseline must be a Candidate or a torch.nn.Module; got {type(baseline).__name__}")
            baseline = zoo.baseline(baseline)
        if not hasattr(data, "test") or not hasattr(data, "fingerprint"):
            raise TypeError(f"data must be an optlab Dataset (optlab.data.load(...)); got {type(data).__name__}")
        if workload is None:
            workload = Workload()
        self.options, pricing = from_keywords(options, pricing, deprecated)
        self.baseline, self.data, self.workload = baseline, data, workload
        self.executor = self.options.executor or InProcessExecutor()
        self.stop_reason: str | None = None  # "time limit" or "interrupted" when the last run stopped early
        self._skipped: dict[str, dict[str, Any]] = {}  # fingerprint -> skipped row (never stored)
        self._hard_stop = HardStop()
        self.results_dir = Path(results_dir)
        self.store = Store(self.results_dir)
        self.recipes: list[Recipe] = []
        self._rows: dict[str, dict[str, Any]] = {}  # fingerprint -> stored local row
        self._reference: list[dict[str, Any]] = []
        self._extra = None  # figures per candidate computed elsewhere (serving), joined onto results
        self._subscribers = Subscribers()
        self._model_fp: str | None = None
        self._order: dict[str, int] | None = None  # fingerprint -> position of its task (baseline first)
        self._running = False
        self.pricing = pricing.for_device(self.baseline.device)
        self.add(recipes)

    def __getattr__(self, name: str) -> Any:
        """The run options read as attributes (`study.time_limit_s`, `study.progress`, ...)."""
        options = self.__dict__.get("options")
        if options is not None and name in RUN_KEYWORDS and name != "executor":
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
                self._order = None
        return self

    def set_price(self, price_per_hour_usd: Any = None, *, utilisation: float | None = None,
                  requests_per_s: float | None = None) -> "Study":
        """Change the cost assumptions (a derived view: nothing is re-measured). A `Pricing` may be
        passed whole; `utilisation` left out keeps the default share (0.5)."""
        if isinstance(price_per_hour_usd, Pricing):
            pricing = price_per_hour_usd
        else:
            pricing = Pricing(price_per_hour_usd, requests_per_s=requests_per_s,
                              **({} if utilisation is None else {"utilisation": utilisation}))
        self.pricing = pricing.for_device(self.baseline.device)
        return self

    @property
    def price(self):
        """The price per hour in use (an `optlab.study.costs.Price`)."""
        return self.pricing.price

    @property
    def utilisation(self) -> float:
        return self.pricing.utilisation

    @property
    def requests_per_s(self) -> float | None:
        return self.pricing.requests_per_s

    def subscribe(self, callback: Callable[[StudyEvent], Any]) -> Callable[[], None]:
        """Call `callback(event: StudyEvent)` after every finished row; returns an unsubscribe
        function. A callback that raises is reported as a warning and never stops the study."""
        return self._subscribers.add(callback)

    @property
    def callback_errors(self) -> list[str]:
        """What subscribers raised (message and traceback), oldest first."""
        return self._subscribers.errors

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
            tasks.append((Task(recipe, digest, self.store.artifacts_dir(name, digest)), key))
        self._order = {task.fingerprint: i for i, (task, _) in enumerate(tasks)}
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

        With a time limit (`RunOptions.time_limit_s`), it returns when the limit is reached;
        Ctrl-C stops it too (KeyboardInterrupt is raised again). Either way what finished is
        stored and the rows not produced appear in `results` with status "skipped";
        `stop_reason` says why.
        """
        if self._running:
            raise RuntimeError("this study is already running (run() was called from a callback?); wait for it")
        if recipes is not None:
            self.add(recipes)
        retry = self.options.retry_errors if retry_errors is None else retry_errors
        deadline = None
        if self.options.time_limit_s is not None:
            origin = time.monotonic() if self.options.time_limit_from is None else self.options.time_limit_from
            deadline = origin + self.options.time_limit_s - self.options.time_limit_reserve_s
        self._running = True
        self.stop_reason, self._skipped = None, {}
        try:
            with self.store.lock(self.options.lock_timeout_s):
                self._model_fp = None  # the model may have changed in place since the last run
                self._bind()
                tasks = self._tasks()
                pending, cached = [], []
                for task, key in tasks:
                    row = self._cached(task.fingerprint, retry)
                    (cached if row is not None else pending).append((task, key) if row is None else row)
                self._rows = {row["fingerprint"]: {**row, "cached": True} for row in cached}
                total, done = len(tasks), len(cached)
                for row in self._rows.values():
                    self._emit([row], done, total, cached=True)
                if pending:
                    self._run_pending(pending, done, total, deadline)
        finally:
            self._running = False
        return self.results

    def _bind(self) -> None:
        """One folder, one study: refuse a folder that holds another baseline's or data set's rows."""
        model = self._key(BASELINE_RECIPE_JSON)["model"]
        name = self.baseline.name or "baseline"
        subfolder = self.results_dir / f"{slug(name, 40)}-{model[:8]}"
        self.store.bind({"baseline": model, "data": str(self.data.fingerprint), "name": name},
                        fix=f", e.g. results_dir={os.fspath(subfolder)!r}")

    def _run_pending(self, pending: list[tuple[Task, dict[str, Any]]], done: int, total: int,
                     deadline: float | None) -> None:
        keys = {task.fingerprint: key for task, key in pending}
        limit = self.options.time_limit_s
        limit_note = (f"not run: the study's time limit ({limit:.3g} s) was reached"
                      if limit is not None else "not run: the study stopped early")
        context = TaskContext(self.baseline, self.data, self.workload, self._inputs(), None,
                              deadline=deadline, verbose=self.options.verbose, stop_note=limit_note)
        bar = progress_bar(total=total, initial=done, desc="optlab study", unit="candidate",
                           disable=not self.options.progress)
        elapsed: list[float] = []
        try:
            grace = max(HARD_STOP_MIN_S, HARD_STOP_SHARE * (limit or 0.0))
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
                    self._emit([self._rows[fingerprint]], done, total, cached=False)
                    if ctrl_c["requested"]:  # its KeyboardInterrupt was swallowed where it landed: stop here
                        raise KeyboardInterrupt("optlab: Ctrl-C")
        except KeyboardInterrupt:
            if not self._stopped(pending, keys, context, bar, done, total, limit_note):
                raise  # Ctrl-C: the caller hears it; a time limit's stop is this run's end
        finally:
            bar.close()
        if self.stop_reason == "time limit" and not self._hard_stop.fired and self.options.progress:
            print(f"optlab: the study's time limit ({limit:.3g} s) was reached; not run: "
                  f"{', '.join(self.skipped)} (run() again to continue)")

    def _stopped(self, pending, keys, context, bar, done: int, total: int, limit_note: str) -> bool:
        """After a stop (time limit or Ctrl-C): name what was not run. True for the time limit."""
        fired = self._hard_stop.fired
        self.stop_reason = "time limit" if fired else "interrupted"
        note = limit_note if fired else "not run: the study was interrupted (Ctrl-C)"
        for task, _ in pending:
            if task.fingerprint in keys:
                self._skipped[task.fingerprint] = skipped_row(context, task, note)
        bar.write(f"optlab: study {'stopped at its time limit' if fired else 'interrupted'}; "
                  f"{done} of {total} rows are stored in {self.results_dir} (run() again to continue); "
                  f"not run: {', '.join(self.skipped)}")
        return fired

    @property
    def skipped(self) -> list[str]:
        """Names of the candidates the last run did not produce (time limit or Ctrl-C)."""
        order = self._task_order() if self._skipped else {}
        rows = sorted(self._skipped.values(), key=lambda r: order.get(r["fingerprint"], len(order)))
        return [str(r.get("candidate")) for r in rows]

    def _inputs(self) -> Any:
        if self.options.inputs is not None:
            return self.options.inputs
        return self.data.requests if getattr(self.data, "requests", None) else self.data.test.inputs

    def _baseline_outputs(self) -> Any:
        """The baseline's test-split outputs, once per run (every candidate is compared to them)."""
        return quality_reference(self.baseline, self.data, "test")

    # -- events -------------------------------------------------------------------------
    def _emit(self, rows: list[dict[str, Any]], done: int, total: int, *, cached: bool) -> None:
        """Tell subscribers about `rows` (priced and joined as `results` shows them)."""
        if not self._subscribers or not rows:
            return
        announced = tuple(results_table(rows, self.pricing, self._extra).to_dict("records"))
        self._subscribers.send(StudyEvent(announced, done, total, cached,
                                          (tuple(self._ordered_rows()), self.pricing, self._extra)))

    # -- results ------------------------------------------------------------------------
    def _task_order(self) -> dict[str, int]:
        if self._order is None:
            self._tasks()
        return self._order

    def _ordered_rows(self) -> list[dict[str, Any]]:
        """Every row so far: baseline first, then recipes in order (skipped ones too), then reference rows."""
        produced = {**self._skipped, **self._rows}
        order = self._task_order() if produced else {}
        local = sorted((r for f, r in produced.items() if f in order), key=lambda r: order[r["fingerprint"]])
        return local + self._reference

    @property
    def results(self):
        """All rows so far (baseline first, then recipes in order, then reference rows), with
        cost columns from the current pricing and the extra figures (serving) joined. A fresh
        DataFrame each time (`optlab.study.table.results_table`)."""
        return results_table(self._ordered_rows(), self.pricing, self._extra)

    def serve(self, requests=None, *, max_p99_ms: float = 10.0, **options):
        """Serve each successful candidate in-process and find its throughput at the SLA (p99 <=
        `max_p99_ms` under open-loop load, per batching policy). Returns that table, best first;
        `results` gains its columns and the explorer can draw them. See
        `optlab.study.serving.serving_table` for the options."""
        table = serving_module.serving_table(self.results, self.baseline, self.data, self.store.serving_dir,
                                             requests, max_p99_ms=max_p99_ms, **options)
        self.set_serving(table)
        return table

    def set_serving(self, table) -> None:
        """Attach figures per candidate computed elsewhere (e.g. `optlab.study.serving.COLUMNS`): a
        derived view, kept in memory, replaced per candidate, and announced to subscribers."""
        self._extra = merge_extra(self._extra, table)
        named = set(table["candidate"])
        touched = [row for row in self._ordered_rows() if row.get("candidate") in named]
        self._emit(touched, len(self._rows), len(self.recipes) + 1, cached=True)

    def load_reference(self, path: str | os.PathLike, label: str, *, price_per_hour_usd: Any = None):
        """Rows from another machine's results folder (read-only), shown as status="reference"
        with `source=label`; they are never used as cache hits. Returns those rows."""
        reference_price = None if price_per_hour_usd is None else Pricing(price_per_hour_usd).price
        loaded = reference_rows(path, label, None if reference_price is None else reference_price.price_per_hour_usd)
        self._reference = [r for r in self._reference if r.get("source") != label] + loaded
        self._emit(loaded, len(self._rows), len(self.recipes) + 1, cached=True)  # one event: one redraw
        return results_table(loaded, self.pricing, self._extra)

    # -- the trade-off --------------------------------------------------------------------
    def frontier(self, x: str = "p99_ms", y: str = "quality", **options):
        """The Pareto-optimal rows (minimise x; quality up, or down for mae and rmse); see
        `optlab.study.frontier.pareto_front`."""
        return frontier_module.pareto_front(self._nonempty("frontier"), x, y, **options)

    def recommend(self, *, max_p99_ms: float | None = None, max_quality_drop: float | None = None,
                  objective: str = "cost", max_memory_mb: float | None = None, max_size_mb: float | None = None,
                  **options) -> frontier_module.Recommendation:
        """The best candidate under the constraints (see `optlab.study.frontier.recommend`), the
        winner re-timed side by side with the runner-up and the baseline first (`retime=False`
        skips that; see `optlab.study.contenders`). `max_memory_mb` and `max_size_mb` are budgets on
        the rows' measured peak memory (a fresh process serving the candidate) and size on disk.
        Rows from several machines (a study on Ray) need `machine=` (one machine's rows) or
        `across_machines=True`; the re-timing runs on this machine."""
        return contenders.recommend(self, self._nonempty("recommend"), max_p99_ms=max_p99_ms,
                                    max_quality_drop=max_quality_drop, objective=objective,
                                    max_memory_mb=max_memory_mb, max_size_mb=max_size_mb, **options)

    def _nonempty(self, what: str):
        df = self.results
        if len(df) == 0:
            raise ValueError(f"{what}(): the study has no results yet; call study.run() first")
        return df

    def __repr__(self) -> str:
        return (f"Study({len(self.recipes)} recipes, {len(self._rows)} rows done, results_dir="
                f"{os.fspath(self.results_dir)!r}, executor={self.executor!r})")
