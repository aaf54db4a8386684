"""A Pareto chart that follows a study: the simplest live view, without controls.

It keeps its own copy of the rows, adds the rows each study event carries and redraws; it
never changes the study.
"""
from __future__ import annotations

from typing import Any, Callable

from optlab.views.explore import frame, merge_rows
from optlab.views.rendering import CellEndDisplay, is_headless, jupyter_chart, static_bundle, widget_bundle


class LiveChart:
    """A Pareto chart that gains a point as each candidate of a study finishes
    (`study.subscribe`). Live it is a JupyterChart; headless `show()` updates a display
    in place, so the saved notebook ends with the final chart."""

    def __init__(self, study, **chart_options: Any):
        self.study = study
        self.options = {"x": "p99_ms", "y": "quality", **chart_options}
        results = study.results if hasattr(study, "results") else study
        self._records = merge_rows({}, [] if results is None else results.to_dict("records"))
        self._empty = results.iloc[0:0] if results is not None else None
        self.chart = self._build()
        self.jchart = jupyter_chart(self.chart)
        self._display = None  # headless: the output redrawn in place when each cell ends
        self._unsubscribe: Callable[[], None] | None = study.subscribe(self.update)

    @property
    def rows(self):
        """The chart's copy of the study's rows."""
        return frame(self._records) if self._records else self._empty

    def _build(self):
        from optlab.views.plots import pareto_chart

        return pareto_chart(self.rows, **self.options)

    def update(self, event=None) -> None:
        """Add the rows the event carries (`event.rows`, or its `event.row`) and redraw."""
        rows = getattr(event, "rows", None)
        rows = list(rows) if rows is not None else [getattr(event, "row", None) or {}]
        self._records = merge_rows(self._records, [r for r in rows if r.get("candidate") is not None])
        self.chart = self._build()
        self.jchart.chart = self.chart
        if self._display is not None:
            self._display.refresh()

    def close(self) -> None:
        """Stop following the study."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _static(self) -> dict[str, Any]:
        from optlab.views.report import headline_table

        return static_bundle(self.chart, headline_table(self.rows))

    def show(self):
        from IPython.display import display

        if is_headless():
            self._display = CellEndDisplay.show(self._static)
        else:
            display(self.jchart)
        return self

    def _repr_mimebundle_(self, include=None, exclude=None):
        if is_headless():
            return self._static()
        return {**self._static(), **widget_bundle(self.jchart, include=include, exclude=exclude)}
