"""Live trade-off widgets: thin holders of state over a Study and optlab.views.plots.

Two kinds of control, on purpose:
- views (SLA limits, price, objective, families, x axis) re-filter and re-rank rows that are
  already measured: instant, no measurement;
- experiments (technique picker, sparsity, bits, calibration, temperature) only choose;
  the Run button builds those recipes and runs them in the kernel's main thread (a
  background thread would steal a core from the code being timed). The chart still gains
  each point as it finishes: widget updates are sent while the cell runs.
Headless (no kernel, OPTLAB_HEADLESS=1, papermill/nbconvert/nbval) the widgets show a
static chart and a table instead.
"""
from __future__ import annotations

import html
from typing import Any, Callable

from optlab.views.details import DETAILS, DETAILS_MAX_HEIGHT_PX, details_html
from optlab.views.explore import ExplorerState, explore, frame, merge_rows, recipes_for
from optlab.views.live import LiveChart
from optlab.views.rendering import CellEndDisplay, is_headless, jupyter_chart, static_bundle, widget_bundle

__all__ = ["TradeoffExplorer", "LiveChart", "ExplorerState", "explore", "details_html", "DETAILS", "is_headless"]

TECHNIQUES = ("quantize", "prune", "distill", "compile")
CALIBRATIONS = ("dynamic", "minmax", "entropy", "percentile")
BITS = (16, 8, 4)
SERVED_X = "throughput_at_sla_per_s"  # from Study.serve: requests/s a served candidate sustains within the SLA
X_AXES = (("p99 latency", "p99_ms"), ("throughput", "throughput_per_s"), ("served at SLA", SERVED_X))
# Generation rows (optlab.generation.candidates) carry these instead of p99_ms: offered once rows have them.
GENERATION_X_AXES = (("TTFT p99", "ttft_p99_ms"), ("output tokens/s", "output_tokens_per_s"),
                     ("goodput at SLA", "goodput_per_s"))
ALWAYS_X = ("p99_ms", "throughput_per_s")
# Controls are sized so nothing clips at 1280x800 or 1440x900: descriptions get a fixed width that
# holds their words, inputs keep room for their numbers, and rows wrap instead of running past the cell.
VIEW_LABEL_PX, VIEW_WIDTH_PX = 190, 340  # "max quality drop (0: none)" took 174 px in Chromium
EXPERIMENT_LABEL_PX, EXPERIMENT_WIDTH_PX = 90, 300


def _results(source) -> Any:
    return source.results if hasattr(source, "results") else source


def _style(label_px: int) -> dict[str, str]:
    return {"description_width": f"{label_px}px"}


def _layout(width_px: int):
    import ipywidgets as w

    return w.Layout(width=f"{width_px}px", max_width="100%")


def _wrap(children, **layout):
    """A row that wraps onto the next line when the cell is narrow (never clips nor scrolls)."""
    import ipywidgets as w

    return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", align_items="flex-start", **layout))


class TradeoffExplorer:
    """A live Pareto chart with SLA / price / objective / family views, a recommendation, a
    details pane for the clicked point, and technique pickers with a Run button.

    study: a Study (Run enabled) or a results DataFrame (views only). The explorer keeps its own
    copy of the rows: built on a Study it takes the study's rows once, then adds the rows each
    study event carries (`study.subscribe`), so each point appears as it is measured, whether the
    study runs from the Run button, `study.run()` in this or a later cell, or after
    `study.add(...)`. It never changes the study: prices are applied to its copy.
    run: what the Run button calls with the chosen recipes (default: `study.run(recipes=...)`);
    rows it returns as a DataFrame are added too. `close()` stops following.
    machine / across_machines: rows measured on several machines (a study on Ray) are labelled by
    machine (a `machine` column, in the tooltips) and recommended within `machine`'s rows, or across
    them all with `across_machines=True`; with neither, the recommendation line names the machines.
    What is shown is `explore(rows, state)` (optlab.views.explore), a pure function of the rows
    and `.state` (an ExplorerState). State for code and tests: `.recommendation`
    (optlab.study.frontier.Recommendation or None), `.chart_data` (the rows drawn, with
    `meets_sla` and `recommended` columns), `.chart` (the altair chart), `.jchart` (its JupyterChart).
    """

    def __init__(self, study, *, x: str = "p99_ms", y: str = "quality", max_p99_ms: float | None = None,
                 max_quality_drop: float | None = 0.01, objective: str = "cost",
                 price_per_hour_usd: float | None = None, utilisation: float | None = None,
                 run: Callable[[list], Any] | None = None, machine: str | None = None,
                 across_machines: bool = False):
        self.study = study
        self._machine, self._across_machines = machine, across_machines
        self._run = run or (getattr(study, "run", None) if hasattr(study, "subscribe") else None)
        self._has_runner = callable(self._run)
        self._records = merge_rows({}, self._initial_rows(study))
        self._utilisation = utilisation or getattr(study, "utilisation", None) or 0.5
        self._requests_per_s = getattr(study, "requests_per_s", None)
        price = getattr(getattr(study, "price", None), "price_per_hour_usd", None)
        self.y = y
        self._make_views(x, max_p99_ms, max_quality_drop, objective, price_per_hour_usd or price or 0.10)
        self._make_experiments()
        self.recommendation_html = _html_widget()
        self.details = _html_widget("<i>click a point for its figures</i>",
                              max_height=f"{DETAILS_MAX_HEIGHT_PX + 20}px", overflow="hidden")
        self.recommendation = None
        self._recommend_error: str | None = None
        self._display = None  # the headless output (CellEndDisplay), redrawn in place as rows arrive
        self.chart_data = None
        self._chart_key = None
        self._sync_families()
        self.chart = self._build_chart()
        self.jchart = jupyter_chart(self.chart)
        self._watch_selection()
        self._refresh()
        for control in self.views:
            control.observe(self._on_view, names="value")
        self.run_button.on_click(self._on_run)
        self.widget = self._layout()
        follows = hasattr(study, "subscribe")
        self._unsubscribe: Callable[[], None] | None = study.subscribe(self._on_event) if follows else None
        if follows:  # rows the study already has count as done
            self.progress.max = len(getattr(study, "recipes", ())) + 1
            local = self.rows.query("status != 'reference'") if "status" in self.rows.columns else self.rows
            self.progress.value = min(len(local), self.progress.max)

    @staticmethod
    def _initial_rows(study) -> list[dict]:
        df = _results(study)
        return [] if df is None or len(df) == 0 else df.to_dict("records")

    def _make_views(self, x, max_p99_ms, max_quality_drop, objective, price) -> None:
        import ipywidgets as w

        from optlab.study.frontier import OBJECTIVES

        style, layout = _style(VIEW_LABEL_PX), _layout(VIEW_WIDTH_PX)
        self.max_p99_ms = w.FloatText(value=float(max_p99_ms or 0.0), step=0.1, description="max p99 ms (0: none)",
                                      style=style, layout=layout)
        self.max_quality_drop = w.FloatText(value=float(max_quality_drop or 0.0), step=0.005,
                                            description="max quality drop (0: none)", style=style, layout=layout)
        self.price_per_hour = w.FloatText(value=float(price), step=0.05, description="price $/hour", style=style,
                                          layout=layout)
        self.objective = w.Dropdown(options=list(OBJECTIVES), value=objective, description="optimise", style=style,
                                    layout=layout)
        axes = [label_value for label_value in X_AXES if label_value[1] in ALWAYS_X]
        self.x_axis = w.Dropdown(options=axes, value=x if x in ALWAYS_X else "p99_ms",
                                 description="x axis", style=style, layout=layout)
        known = [value for _, value in X_AXES + GENERATION_X_AXES]
        self._x_custom = x if x not in known else None
        self._x_wanted = x if x in known and x not in ALWAYS_X else None  # chosen once the rows have it
        self.log_x = w.Checkbox(value=True, description="log latency axis", indent=False,
                                layout=w.Layout(width="200px", margin=f"0 0 0 {VIEW_LABEL_PX + 6}px"))
        self.families = w.SelectMultiple(options=[], description="families", rows=4, style=style, layout=layout)
        self.views = (self.max_p99_ms, self.max_quality_drop, self.price_per_hour, self.objective,
                      self.x_axis, self.families, self.log_x)

    def _make_experiments(self) -> None:
        import ipywidgets as w

        style, wide = _style(EXPERIMENT_LABEL_PX), _layout(EXPERIMENT_WIDTH_PX)
        narrow = _layout(EXPERIMENT_LABEL_PX + 120)
        self.techniques = w.SelectMultiple(options=list(TECHNIQUES), value=("quantize",), description="techniques",
                                           rows=4, style=style, layout=narrow)
        self.bits = w.Dropdown(options=list(BITS), value=8, description="bits", style=style, layout=narrow)
        self.calibration = w.Dropdown(options=list(CALIBRATIONS), value="dynamic", description="calibration",
                                      style=style, layout=narrow)
        self.sparsity = w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="sparsity", style=style,
                                      layout=wide)
        self.structured = w.Checkbox(value=False, description="structured pruning", indent=False,
                                     layout=w.Layout(width="200px", margin=f"0 0 0 {EXPERIMENT_LABEL_PX + 6}px"))
        self.temperature = w.FloatSlider(value=4.0, min=1.0, max=10.0, step=0.5, description="temperature",
                                         style=style, layout=wide)
        self.run_button = w.Button(description="Run", button_style="primary", icon="play",
                                   disabled=not self._has_runner,
                                   tooltip="build and measure the chosen candidates" if self._has_runner
                                   else "pass a Study (not a DataFrame) to run experiments")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="progress", style=style, layout=narrow)
        self.status = w.HTML()
        self.experiments = (self.techniques, self.bits, self.calibration, self.sparsity, self.structured,
                            self.temperature, self.run_button)

    def close(self) -> None:
        """Stop following the study (the widgets stay as they are)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- state ----------------------------------------------------------------------------
    @property
    def x(self) -> str:
        return self._x_custom or self.x_axis.value

    @property
    def rows(self):
        """The explorer's copy of the study's rows (as measured; unpriced by the explorer)."""
        return frame(self._records)

    def _limits(self) -> tuple[float | None, float | None]:
        p99, drop = self.max_p99_ms.value, self.max_quality_drop.value
        return (p99 if p99 and p99 > 0 else None), (drop if drop and drop > 0 else None)

    @property
    def state(self) -> ExplorerState:
        """What the controls say, as one frozen value."""
        max_p99, max_drop = self._limits()
        price = self.price_per_hour.value
        families = tuple(self.families.value) if self.families.options else None
        return ExplorerState(max_p99_ms=max_p99, max_quality_drop=max_drop, objective=self.objective.value,
                             price_per_hour_usd=float(price) if price and price > 0 else None,
                             utilisation=self._utilisation, requests_per_s=self._requests_per_s,
                             families=families, x=self.x, y=self.y, machine=self._machine,
                             across_machines=self._across_machines)

    def results(self):
        """The rows with costs at the price box's price: a priced copy (the study is not changed;
        reference rows keep the price of the machine they ran on)."""
        from optlab.views.explore import priced

        return priced(self._source(), self.state)

    def _source(self):
        """The rows, or (before any) an empty frame with the columns a chart needs."""
        import pandas as pd

        rows = self.rows
        return rows if len(rows) else pd.DataFrame(columns=["candidate", "family", "status", self.x, self.y])

    def _sync_axes(self) -> None:
        """Offer "served throughput at the SLA" once the rows have it (`Study.serve`), and the generation
        axes (TTFT, output tokens/s, goodput) once generation rows arrive."""
        df = self.rows
        options = list(self.x_axis.options)
        offered = [value for _, value in options]
        for label, value in X_AXES + GENERATION_X_AXES:
            if value not in offered and value in df.columns and df[value].notna().any():
                options.append((label, value))
        if len(options) > len(offered):
            self.x_axis.options = options
            if self._x_wanted in [value for _, value in options]:
                self.x_axis.value = self._x_wanted

    def _sync_families(self) -> None:
        self._sync_axes()
        df = self.rows
        found = sorted({str(f) for f in df["family"].dropna()}) if "family" in df.columns else []
        known = list(self.families.options)
        new = [f for f in found if f not in known]
        if new:
            chosen = tuple(self.families.value) + tuple(new)
            self.families.options = known + new
            self.families.value = chosen

    def _build_chart(self):
        from optlab.views.plots import pareto_chart

        state = self.state
        shown = explore(self._source(), state)
        self.chart_data, self.recommendation, self._recommend_error = shown.data, shown.recommendation, shown.note
        chosen = getattr(self.recommendation, "candidate", None)
        return pareto_chart(self.chart_data, x=self.x, y=self.y, max_p99_ms=state.max_p99_ms,
                            max_quality_drop=state.max_quality_drop, recommended=chosen or "",
                            log_x=self.log_x.value)

    def _refresh(self, data_changed: bool = True) -> None:
        """Re-rank and redraw. When only SLA limits or the objective moved, just the chart's
        params change (no re-embed); new rows, prices, families or axes send a new spec."""
        self.chart = self._build_chart()
        max_p99, max_drop = self._limits()
        key = (self.x, self.log_x.value, max_p99 is None, max_drop is None, tuple(self.families.value),
               self.price_per_hour.value, len(self.chart_data))
        if data_changed or key != self._chart_key:
            self.jchart.chart = self.chart
            self._watch_selection()
        else:
            params = self.jchart.params
            if max_p99 is not None:
                params.max_p99_ms = float(max_p99)
            if max_drop is not None:
                params.max_quality_drop = float(max_drop)
            params.recommended = getattr(self.recommendation, "candidate", None) or ""
        self._chart_key = key
        self._show_recommendation()

    def _show_recommendation(self) -> None:
        rec = self.recommendation
        # its own line height: a widget's HTML inherits the controls' 28 px, which spread a
        # five-line recommendation over 140 px
        block = '<div style="line-height:1.4">'
        if rec is None:
            text = self._recommend_error or "no results yet: run the study"
            self.recommendation_html.value = f"{block}<b>Recommendation:</b> {html.escape(text)}</div>"
            return
        colour = "#1a7f37" if rec.met else "#b35900"
        self.recommendation_html.value = (f'{block}<b>Recommendation:</b> <span style="color:{colour}">'
                                          f"{html.escape(rec.explanation)}</span></div>")

    # -- views ----------------------------------------------------------------------------
    def _on_view(self, change) -> None:
        data_changed = change["owner"] in (self.price_per_hour, self.x_axis, self.families, self.log_x)
        self._refresh(data_changed=data_changed)

    # -- selection details -------------------------------------------------------------------
    def _watch_selection(self) -> None:
        from optlab.views.plots import SELECTION

        selections = self.jchart.selections
        if SELECTION in selections.trait_names():
            selections.observe(self._on_pick, names=SELECTION)

    def _on_pick(self, change) -> None:
        value = getattr(change["new"], "value", None) or []
        names = [v.get("candidate") for v in value if isinstance(v, dict)]
        self.show_details(names[0] if names else None)

    def show_details(self, candidate: str | None) -> None:
        """Fill the details pane with one candidate's figures (what a click on its point does):
        latency percentiles with intervals, throughput, size, quality and its interval, cost, notes."""
        if candidate is None or self.chart_data is None:
            self.details.value = "<i>click a point for its figures</i>"
            return
        df = self.results()
        rows = df[df["candidate"] == candidate]
        if rows.empty:
            self.details.value = f"<i>{html.escape(str(candidate))} is not in the results</i>"
            return
        self.details.value = details_html(rows.iloc[-1].to_dict())

    # -- experiments --------------------------------------------------------------------------
    def chosen_recipes(self) -> list:
        """The recipes the experiment controls describe, one per selected technique."""
        return recipes_for(self.techniques.value, bits=self.bits.value, calibration=self.calibration.value,
                           sparsity=self.sparsity.value, structured=self.structured.value,
                           temperature=self.temperature.value)

    def _set_busy(self, busy: bool) -> None:
        for control in (*self.experiments, *self.views):
            control.disabled = busy or (control is self.run_button and not self._has_runner)

    def _on_run(self, _button=None) -> None:
        """Build and measure the chosen candidates through the run callback, in this (the kernel's
        main) thread; points arrive through the study's events while it runs."""
        if not self._has_runner:
            self.status.value = "<i>this explorer was given a DataFrame: pass a Study to run experiments</i>"
            return
        recipes = self.chosen_recipes()
        if not recipes:
            self.status.value = "<i>pick at least one technique</i>"
            return
        self._set_busy(True)
        self.progress.value, self.progress.max = 0, max(1, len(recipes))
        self.status.value = f"running {html.escape(', '.join(r.name for r in recipes))} ..."
        try:
            returned = self._run(recipes=recipes)
            if hasattr(returned, "to_dict") and "candidate" in getattr(returned, "columns", ()):
                self._records = merge_rows(self._records, returned.to_dict("records"))
            self.status.value = "done"
        except Exception as error:  # noqa: BLE001 - show it in the widget; controls come back
            self.status.value = (
                f'<span style="color:#b00">run failed: {html.escape(f"{type(error).__name__}: {error}")}</span>'
            )
        finally:
            self._set_busy(False)
            self._sync_families()
            self._refresh()

    def _on_event(self, event) -> None:
        """A study event: add the rows it carries (`event.rows`, or its one `event.row`) and redraw."""
        rows = getattr(event, "rows", None)
        rows = list(rows) if rows is not None else [getattr(event, "row", None) or {}]
        self._records = merge_rows(self._records, [r for r in rows if r.get("candidate") is not None])
        self.progress.max = max(1, int(getattr(event, "total", self.progress.max)))
        self.progress.value = min(int(getattr(event, "done", self.progress.value + 1)), self.progress.max)
        self._sync_families()
        self._refresh()
        self._update_static()

    # -- display ------------------------------------------------------------------------------
    def _layout(self):
        import ipywidgets as w

        views = w.VBox([w.HTML("<b>Views</b> (re-rank measured results)"), self.max_p99_ms, self.max_quality_drop,
                        self.price_per_hour, self.objective, self.x_axis, self.log_x, self.families],
                       layout=w.Layout(margin="0 24px 0 0", max_width="100%"))
        experiments = w.VBox([w.HTML("<b>Experiments</b> (build and measure on Run)"),
                              _wrap([self.techniques, w.VBox([self.bits, self.calibration])]),
                              self.sparsity, self.structured, self.temperature,
                              _wrap([self.run_button, self.progress]), self.status],
                             layout=w.Layout(max_width="100%"))
        return w.VBox([_wrap([views, experiments]), self.recommendation_html,
                       _wrap([self.jchart, self.details])], layout=w.Layout(max_width="100%"))

    def table(self):
        from optlab.views.report import headline_table

        return headline_table(self.chart_data)

    def static_bundle(self) -> dict[str, Any]:
        return static_bundle(self.chart, self.table(), self.recommendation_html.value)

    def show(self):
        """Display the live widget, or (headless) the static chart and table, which then
        update in place as the study gains rows (so a saved notebook ends with every point)."""
        from IPython.display import display

        if is_headless():
            self._display = CellEndDisplay.show(self.static_bundle)
        else:
            display(self._repr_mimebundle_(), raw=True)
        return self

    def _ipython_display_(self) -> None:
        self.show()

    def _update_static(self) -> None:
        if self._display is not None:
            self._display.refresh()

    def _repr_mimebundle_(self, include=None, exclude=None):
        if is_headless():
            return self.static_bundle()
        return {**self.static_bundle(), **widget_bundle(self.widget, include=include, exclude=exclude)}


def _html_widget(value: str = "", **layout):
    """An HTML widget (with an optional layout)."""
    import ipywidgets as w

    return w.HTML(value, layout=w.Layout(**layout)) if layout else w.HTML(value)
