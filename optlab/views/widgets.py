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
import math
from typing import Any, Callable

from optlab.views.rendering import is_headless, jupyter_chart, picture_bundle, svg_img, widget_bundle

__all__ = ["TradeoffExplorer", "LiveChart", "is_headless"]

TECHNIQUES = ("quantize", "prune", "distill", "compile")
CALIBRATIONS = ("dynamic", "minmax", "entropy", "percentile")
BITS = (16, 8, 4)
SERVED_X = "throughput_at_sla_per_s"  # from Study.serve: requests/s a served candidate sustains within the SLA
X_AXES = (("p99 latency", "p99_ms"), ("throughput", "throughput_per_s"), ("served at SLA", SERVED_X))
DETAILS_MAX_HEIGHT_PX = 300  # the details pane scrolls past this; the explorer stays <= 900 px tall


def _results(source) -> Any:
    return source.results if hasattr(source, "results") else source


def _static_bundle(chart, table, heading: str = "") -> dict[str, Any]:
    """A bundle every notebook viewer can show with no JavaScript: the chart as an embedded
    SVG plus a table (text/html), the chart's PNG and Vega-Lite v6 spec, and plain text."""
    from optlab.views.report import table_html

    # prices carry "$": without these classes JupyterLab's MathJax (v2 / v3 names) typesets text between pairs
    body = f'<div class="tex2jax_ignore mathjax_ignore">{heading}{svg_img(chart)}{table_html(table)}</div>'
    return {
        **picture_bundle(chart),
        "text/html": body,
        "text/plain": f"{heading and html.unescape(_strip_tags(heading))}\n{table.to_string(max_rows=40)}",
    }


def _strip_tags(text: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", text)


def _number(row, column: str) -> float:
    try:
        value = float(row.get(column))
    except (TypeError, ValueError):
        return math.nan
    return value


def _figure(row, column: str, fmt: str, low: str | None = None, high: str | None = None) -> str | None:
    """`value [low, high]` with the 95% interval when the row has one; None when not measured."""
    value = _number(row, column)
    if math.isnan(value):
        return None
    text = fmt.format(value)
    if low and high and not (math.isnan(_number(row, low)) or math.isnan(_number(row, high))):
        text += f" [{fmt.format(_number(row, low))}, {fmt.format(_number(row, high))}]"
    return text


# (label, column, format, interval low, interval high): the handful a person wants for one candidate
DETAILS = (
    ("p50 ms [95% CI]", "p50_ms", "{:.3f}", "p50_ci_low_ms", "p50_ci_high_ms"),
    ("p95 ms", "p95_ms", "{:.3f}", None, None),
    ("p99 ms [95% CI]", "p99_ms", "{:.3f}", "p99_ci_low_ms", "p99_ci_high_ms"),
    ("throughput (/s)", "throughput_per_s", "{:,.0f}", None, None),
    ("size (MB)", "size_mb", "{:.3f}", None, None),
    ("peak memory (MB)", "peak_rss_mb", "{:.1f}", None, None),
    ("quality", "quality", "{:.4f}", None, None),
    ("drop [95% CI]", "quality_drop", "{:+.4f}", "quality_drop_ci_low", "quality_drop_ci_high"),
    ("agreement", "agreement", "{:.4f}", None, None),
    ("cost per 1M ($)", "cost_per_1m_usd", "{:,.4f}", None, None),
)


def details_html(row: dict[str, Any]) -> str:
    """One candidate's figures as a short table in a bounded-height box (what a click shows)."""
    name = html.escape(str(row.get("candidate")))
    lines = []
    for label, column, fmt, low, high in DETAILS:
        text = _figure(row, column, fmt, low, high)
        if text is not None:
            lines.append((label, text))
    what = " · ".join(str(row[k]) for k in ("family", "runtime", "device", "status")
                      if row.get(k) is not None and str(row.get(k)) not in ("", "nan"))
    for label, column in (("metric", "metric"), ("error", "error"), ("notes", "notes")):
        value = row.get(column)
        if value is not None and str(value) not in ("", "nan", "None"):
            text = str(value)
            lines.append((label, text if len(text) <= 240 else text[:237] + "..."))
    cell = "padding:1px 6px 1px 0;line-height:1.3;vertical-align:top;text-align:left"
    cells = "".join(f"<tr><th style='{cell};white-space:nowrap'>{html.escape(k)}</th>"
                    f"<td style='{cell}'>{html.escape(v)}</td></tr>" for k, v in lines)
    return (f'<div class="optlab-details" style="max-height:{DETAILS_MAX_HEIGHT_PX}px;overflow-y:auto;'
            f'max-width:380px;font-size:12px"><b>{name}</b><br><small>{html.escape(what)}</small>'
            f"<table style='border-collapse:collapse'>{cells}</table></div>")


class TradeoffExplorer:
    """A live Pareto chart with SLA / price / objective / family views, a recommendation, a
    details pane for the clicked point, and technique pickers with a Run button.

    study: a Study (Run enabled) or a results DataFrame (views only). Built on a Study, the
    explorer shows every row the study has and follows it (`study.subscribe`): each point
    appears as it is measured, whether the study runs from the Run button, `study.run()` in
    this or a later cell, or after `study.add(...)`. `close()` stops following.
    State for code and tests: `.recommendation` (optlab.study.frontier.Recommendation or None),
    `.chart_data` (the rows drawn, with `meets_sla` and `recommended` columns), `.chart`
    (the altair chart) and `.jchart` (its JupyterChart).
    """

    def __init__(self, study, *, x: str = "p99_ms", y: str = "quality", max_p99_ms: float | None = None,
                 max_quality_drop: float | None = 0.01, objective: str = "cost",
                 price_per_hour_usd: float | None = None, utilisation: float | None = None):
        import ipywidgets as w

        from optlab.study.frontier import OBJECTIVES

        self.study = study
        self._has_runner = hasattr(study, "run") and hasattr(study, "subscribe")
        price = getattr(getattr(study, "price", None), "price_per_hour_usd", None)
        self._utilisation = utilisation or getattr(study, "utilisation", None) or 0.5
        style = {"description_width": "initial"}

        # views
        self.max_p99_ms = w.FloatText(value=float(max_p99_ms or 0.0), step=0.1, description="max p99 (ms, 0 = none)",
                                      style=style, layout=w.Layout(width="230px"))
        self.max_quality_drop = w.FloatText(value=float(max_quality_drop or 0.0), step=0.005,
                                            description="max quality drop (0 = none)", style=style,
                                            layout=w.Layout(width="250px"))
        self.price_per_hour = w.FloatText(value=float(price_per_hour_usd or price or 0.10), step=0.05,
                                          description="price $/hour", style=style, layout=w.Layout(width="180px"))
        self.objective = w.Dropdown(options=list(OBJECTIVES), value=objective, description="optimise",
                                    layout=w.Layout(width="200px"))
        axes = [label_value for label_value in X_AXES if label_value[1] != SERVED_X]
        self.x_axis = w.ToggleButtons(options=axes, value=x if x in ("p99_ms", "throughput_per_s") else "p99_ms")
        self._x_custom = x if x not in [value for _, value in X_AXES] else None
        self._x_wanted = x if x == SERVED_X else None  # chosen once the study has served figures
        self.y = y
        self.families = w.SelectMultiple(options=[], description="families", rows=4)
        self.views = (self.max_p99_ms, self.max_quality_drop, self.price_per_hour, self.objective,
                      self.x_axis, self.families)

        # experiments
        self.techniques = w.SelectMultiple(options=list(TECHNIQUES), value=("quantize",), description="techniques",
                                           rows=4)
        self.bits = w.Dropdown(options=list(BITS), value=8, description="bits")
        self.calibration = w.Dropdown(options=list(CALIBRATIONS), value="dynamic", description="calibration")
        self.sparsity = w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="sparsity")
        self.structured = w.Checkbox(value=False, description="structured pruning")
        self.temperature = w.FloatSlider(value=4.0, min=1.0, max=10.0, step=0.5, description="temperature")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play",
                                   disabled=not self._has_runner,
                                   tooltip="build and measure the chosen candidates" if self._has_runner
                                   else "pass a Study (not a DataFrame) to run experiments")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="progress")
        self.status = w.HTML()
        self.experiments = (self.techniques, self.bits, self.calibration, self.sparsity, self.structured,
                            self.temperature, self.run_button)

        self.recommendation_html = w.HTML()
        self.details = w.HTML("<i>click a point for its figures</i>",
                              layout=w.Layout(max_height=f"{DETAILS_MAX_HEIGHT_PX + 20}px", overflow="hidden"))
        self.recommendation = None
        self._handle = None  # the headless display, updated in place as rows arrive
        self.chart_data = None
        self.chart = None
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
        self._unsubscribe: Callable[[], None] | None = (
            study.subscribe(self._on_event) if self._has_runner else None)
        if self._has_runner:  # rows the study already has count as done
            self.progress.max = len(getattr(study, "recipes", ())) + 1
            self.progress.value = min(len(_results(study).query("status != 'reference'")), self.progress.max)

    def close(self) -> None:
        """Stop following the study (the widgets stay as they are)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- state ----------------------------------------------------------------------------
    @property
    def x(self) -> str:
        return self._x_custom or self.x_axis.value

    def _limits(self) -> tuple[float | None, float | None]:
        p99, drop = self.max_p99_ms.value, self.max_quality_drop.value
        return (p99 if p99 and p99 > 0 else None), (drop if drop and drop > 0 else None)

    def results(self):
        """The rows with costs at the price box's price. Costs belong to the study
        (`Study.set_price`: a derived view, nothing is re-measured; reference rows keep their own
        price); a bare DataFrame is priced with `optlab.study.costs.with_costs`."""
        import pandas as pd

        from optlab.study.costs import with_costs

        price = self.price_per_hour.value
        priced = bool(price and price > 0)
        if hasattr(self.study, "set_price"):
            current = getattr(getattr(self.study, "price", None), "price_per_hour_usd", None)
            if priced and current != price:
                self.study.set_price(float(price), utilisation=self.study.utilisation,
                                     requests_per_s=getattr(self.study, "requests_per_s", None))
            df = self.study.results
        else:
            df = self.study
            if df is not None and len(df) and priced and "throughput_per_s" in df.columns:
                df = with_costs(df, float(price), utilisation=self._utilisation)
        if df is None or len(df) == 0:
            return pd.DataFrame(columns=["candidate", "family", "status", self.x, self.y])
        return df

    def _sync_axes(self) -> None:
        """Offer "served throughput at the SLA" once the study has it (`Study.serve`)."""
        df = _results(self.study)
        served = df is not None and SERVED_X in getattr(df, "columns", []) and df[SERVED_X].notna().any()
        options = [value for _, value in self.x_axis.options]
        if served and SERVED_X not in options:
            self.x_axis.options = list(X_AXES)
            if self._x_wanted == SERVED_X:
                self.x_axis.value = SERVED_X

    def _sync_families(self) -> None:
        self._sync_axes()
        df = _results(self.study)
        found = [] if df is None or "family" not in getattr(df, "columns", []) else \
            sorted({str(f) for f in df["family"].dropna()})
        known = list(self.families.options)
        new = [f for f in found if f not in known]
        if new:
            chosen = tuple(self.families.value) + tuple(new)
            self.families.options = known + new
            self.families.value = chosen

    def _visible(self, df):
        from optlab.views.plots import drawable

        rows = drawable(df)
        if "family" in rows.columns and self.families.options:
            rows = rows[rows["family"].astype(str).isin(self.families.value)]
        return rows.reset_index(drop=True)

    def _recommend(self, rows):
        from optlab.study.frontier import recommend

        max_p99, max_drop = self._limits()
        try:
            return recommend(rows, max_p99_ms=max_p99, max_quality_drop=max_drop, objective=self.objective.value)
        except ValueError as error:
            self._recommend_error = str(error)
            return None

    def _build_chart(self):
        from optlab.views.plots import pareto_chart

        df = self.results()
        rows = self._visible(df)
        self._recommend_error = None
        self.recommendation = self._recommend(rows) if len(rows) else None
        chosen = getattr(self.recommendation, "candidate", None)
        max_p99, max_drop = self._limits()
        rows = rows.copy()
        rows["meets_sla"] = rows["candidate"].isin(self._meeting(rows)) if len(rows) else []
        rows["recommended"] = rows["candidate"] == chosen if len(rows) else []
        self.chart_data = rows
        return pareto_chart(rows, x=self.x, y=self.y, max_p99_ms=max_p99, max_quality_drop=max_drop,
                            recommended=chosen or "")

    def _meeting(self, rows) -> set[str]:
        """Candidates (reference rows included) that meet the SLA, as optlab.study.frontier judges
        them: the passing ones of a recommendation under the same limits."""
        from optlab.study.frontier import meeting, sla_constraints

        max_p99, max_drop = self._limits()
        return meeting(rows, sla_constraints(max_p99_ms=max_p99, max_quality_drop=max_drop))

    def _refresh(self, data_changed: bool = True) -> None:
        """Re-rank and redraw. When only SLA limits or the objective moved, just the chart's
        params change (no re-embed); new rows, prices, families or axes send a new spec."""
        self.chart = self._build_chart()
        max_p99, max_drop = self._limits()
        key = (self.x, max_p99 is None, max_drop is None, tuple(self.families.value),
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
        if rec is None:
            text = self._recommend_error or "no results yet: run the study"
            self.recommendation_html.value = f"<b>Recommendation:</b> {html.escape(text)}"
            return
        colour = "#1a7f37" if rec.met else "#b35900"
        self.recommendation_html.value = (f'<b>Recommendation:</b> <span style="color:{colour}">'
                                          f"{html.escape(rec.explanation)}</span>")

    # -- views ----------------------------------------------------------------------------
    def _on_view(self, change) -> None:
        data_changed = change["owner"] in (self.price_per_hour, self.x_axis, self.families)
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
        from optlab.recipes.recipe import Compile, Distill, Prune, Quantize

        out = []
        for technique in self.techniques.value:
            if technique == "quantize":
                bits, calibration = self.bits.value, self.calibration.value
                if bits == 16:
                    out.append(Quantize("bf16", runtime="torch"))
                elif bits == 4:
                    out.append(Quantize("weight-only-int4", runtime="inc"))
                elif calibration == "dynamic":
                    out.append(Quantize("dynamic-int8", runtime="onnxruntime"))
                else:
                    out.append(Quantize("static-int8", runtime="onnxruntime", calibration=calibration))
            elif technique == "prune":
                out.append(Prune(sparsity=round(float(self.sparsity.value), 4), structured=self.structured.value))
            elif technique == "distill":
                out.append(Distill(temperature=float(self.temperature.value)))
            elif technique == "compile":
                out.append(Compile(runtime="onnxruntime"))
        return out

    def _set_busy(self, busy: bool) -> None:
        for control in (*self.experiments, *self.views):
            control.disabled = busy or (control is self.run_button and not self._has_runner)

    def _on_run(self, _button=None) -> None:
        """Build and measure the chosen candidates in this (the kernel's main) thread."""
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
        unsubscribe = None if self._unsubscribe is not None else self.study.subscribe(self._on_event)
        try:
            self.study.run(recipes=recipes)
            self.status.value = "done"
        except Exception as error:  # noqa: BLE001 - show it in the widget; controls come back
            self.status.value = (
                f'<span style="color:#b00">run failed: {html.escape(f"{type(error).__name__}: {error}")}</span>'
            )
        finally:
            if callable(unsubscribe):
                unsubscribe()
            self._set_busy(False)
            self._sync_families()
            self._refresh()

    def _on_event(self, event) -> None:
        self.progress.max = max(1, int(getattr(event, "total", self.progress.max)))
        self.progress.value = min(int(getattr(event, "done", self.progress.value + 1)), self.progress.max)
        self._sync_families()
        self._refresh()
        self._update_static()

    # -- display ------------------------------------------------------------------------------
    def _layout(self):
        import ipywidgets as w

        views = w.VBox([w.HTML("<b>Views</b> (re-rank measured results)"),
                        w.HBox([self.max_p99_ms, self.max_quality_drop]),
                        w.HBox([self.price_per_hour, self.objective]), self.x_axis, self.families])
        experiments = w.VBox([w.HTML("<b>Experiments</b> (build and measure on Run)"),
                              w.HBox([self.techniques, w.VBox([self.bits, self.calibration])]),
                              w.HBox([self.sparsity, self.structured]), self.temperature,
                              w.HBox([self.run_button, self.progress]), self.status])
        return w.VBox([w.HBox([views, experiments]), self.recommendation_html,
                       w.HBox([self.jchart, self.details])])

    def table(self):
        from optlab.views.report import headline_table

        return headline_table(self.chart_data)

    def static_bundle(self) -> dict[str, Any]:
        return _static_bundle(self.chart, self.table(), self.recommendation_html.value)

    def show(self):
        """Display the live widget, or (headless) the static chart and table, which then
        update in place as the study gains rows (so a saved notebook ends with every point)."""
        from IPython.display import display

        if is_headless():
            self._handle = display(self.static_bundle(), raw=True, display_id=True)
        else:
            display(self._repr_mimebundle_(), raw=True)
        return self

    def _ipython_display_(self) -> None:
        self.show()

    def _update_static(self) -> None:
        if self._handle is not None:
            self._handle.update(self.static_bundle(), raw=True)

    def _repr_mimebundle_(self, include=None, exclude=None):
        if is_headless():
            return self.static_bundle()
        return {**self.static_bundle(), **widget_bundle(self.widget, include=include, exclude=exclude)}


class LiveChart:
    """A Pareto chart that gains a point as each candidate of a study finishes
    (`study.subscribe`). Live it is a JupyterChart; headless `show()` updates a display
    in place, so the saved notebook ends with the final chart."""

    def __init__(self, study, **chart_options: Any):
        self.study = study
        self.options = {"x": "p99_ms", "y": "quality", **chart_options}
        self.chart = self._build()
        self.jchart = jupyter_chart(self.chart)
        self._handle = None
        self._unsubscribe: Callable[[], None] | None = study.subscribe(self.update)

    def _build(self, df=None):
        from optlab.views.plots import pareto_chart

        df = _results(self.study) if df is None else df
        return pareto_chart(df, **self.options)

    def update(self, event=None) -> None:
        """Redraw from the study's rows (called by the study after each candidate)."""
        self.chart = self._build(getattr(event, "results", None))
        self.jchart.chart = self.chart
        if self._handle is not None:
            self._handle.update(self._static(), raw=True)

    def close(self) -> None:
        """Stop following the study."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _static(self) -> dict[str, Any]:
        from optlab.views.report import headline_table

        return _static_bundle(self.chart, headline_table(_results(self.study)))

    def show(self):
        from IPython.display import display

        if is_headless():
            self._handle = display(self._static(), raw=True, display_id=True)
        else:
            display(self.jchart)
        return self

    def _repr_mimebundle_(self, include=None, exclude=None):
        if is_headless():
            return self._static()
        return {**self._static(), **widget_bundle(self.jchart, include=include, exclude=exclude)}
