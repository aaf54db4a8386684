"""Charts of language-model generation: pure functions from the generation frames to altair charts,
and a live chart of a goodput search that gains a point as each probe finishes.

`decode_batch` draws `generation.demo.decode_step_ms` (step time and time per row against batch),
`kv_positions` draws `demo.per_position_ms` (time per token against position, cached vs recomputed),
`sla_probes` draws a goodput search's probes (TTFT p99 and TPOT p99 against offered rate, one line per
engine, each limit a dashed rule), `goodput` the goodput per engine. They never measure.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from optlab.views.plots import _require, _themed
from optlab.views.rendering import CellEndDisplay, is_headless, picture_bundle


def decode_batch(frame: pd.DataFrame):
    """Time of one decode step and time per row against the batch size (log x)."""
    import altair as alt

    _require(frame, ["batch", "step_ms", "ms_per_row"], "decode_batch")
    long = frame.melt(id_vars="batch", value_vars=["step_ms", "ms_per_row"], var_name="figure", value_name="ms")
    chart = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("batch:Q", scale=alt.Scale(type="log", base=2), title="rows in the batch"),
        y=alt.Y("ms:Q", title="ms"), color=alt.Color("figure:N", title=None),
        tooltip=["batch", "figure", alt.Tooltip("ms:Q", format=".2f")])
    return _themed(chart.properties(title="one decode step: batching is nearly free", width=380, height=240))


def kv_positions(frame: pd.DataFrame):
    """ms per generated token against its position, with the KV cache and recomputing everything."""
    import altair as alt

    _require(frame, ["position", "cached_ms", "recompute_ms"], "kv_positions")
    long = frame.melt(id_vars="position", value_vars=["cached_ms", "recompute_ms"], var_name="decode",
                      value_name="ms")
    long["decode"] = long["decode"].map({"cached_ms": "KV cache", "recompute_ms": "recompute"})
    chart = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("position:Q", title="position of the generated token"), y=alt.Y("ms:Q", title="ms per token"),
        color=alt.Color("decode:N", title=None), tooltip=["position", "decode", alt.Tooltip("ms:Q", format=".2f")])
    return _themed(chart.properties(title="time per token against position", width=380, height=240))


def sla_probes(probes: pd.DataFrame, *, ttft_ms: float, tpot_ms: float):
    """TTFT p99 and TPOT p99 (log) against the offered rate per engine; filled points passed both limits."""
    import altair as alt

    _require(probes, ["engine", "offered_per_s", "ttft_p99_ms", "tpot_p99_ms", "passed"], "sla_probes")
    panels = []
    for column, limit, title in (("ttft_p99_ms", ttft_ms, "TTFT p99 ms"), ("tpot_p99_ms", tpot_ms, "TPOT p99 ms")):
        shown = probes.dropna(subset=[column])
        base = alt.Chart(shown).encode(
            x=alt.X("offered_per_s:Q", scale=alt.Scale(type="log"), title="offered requests/s"),
            y=alt.Y(f"{column}:Q", scale=alt.Scale(type="log"), title=title),
            # the legend below the panels: candidate names ("continuous(INC RTN int4 g32)") would widen the chart
            color=alt.Color("engine:N", legend=alt.Legend(orient="bottom", columns=3, labelLimit=240)),
            tooltip=["engine", "offered_per_s", column, "passed"])
        points = base.mark_point(size=60).encode(
            fill=alt.condition("datum.passed", alt.ColorValue("currentColor"), alt.value("white")))
        rule = alt.Chart(pd.DataFrame({"limit": [limit]})).mark_rule(strokeDash=[4, 4], color="#d62728").encode(
            y="limit:Q")
        panels.append((base.mark_line() + points + rule).properties(width=260, height=220))
    return _themed(alt.hconcat(*panels).properties(title="the goodput search's probes (hollow: missed the SLA)"))


TOOLTIP = ("candidate", "engine", "goodput_per_s", "ttft_p99_ms", "tpot_p99_ms", "output_tokens_per_s", "perplexity",
           "agreement", "note", "notes")


def goodput(summary: pd.DataFrame):
    """Bars of goodput at the SLA per candidate (`optlab.generation.candidates` rows) or per engine;
    rows not measured are left out."""
    import altair as alt

    label = "candidate" if "candidate" in summary.columns else "engine"
    _require(summary, [label, "goodput_per_s"], "goodput")
    columns = [label, *(c for c in TOOLTIP if c in summary.columns and c != label)]
    shown = summary.dropna(subset=["goodput_per_s"])[columns]
    chart = alt.Chart(shown).mark_bar().encode(
        x=alt.X("goodput_per_s:Q", title="requests/s within the SLA"), y=alt.Y(f"{label}:N", sort="-x", title=None),
        tooltip=columns)
    return _themed(chart.properties(title="goodput at the SLA", width=380, height=30 * max(len(shown), 1)))


class LiveProbes:
    """The `sla_probes` chart, redrawn in place as each probe arrives (`add`, an `on_probe` callback).
    Headless it shows a PNG (the saved notebook ends with the final chart)."""

    def __init__(self, *, ttft_ms: float, tpot_ms: float):
        self.ttft_ms, self.tpot_ms = ttft_ms, tpot_ms
        self.rows: list[dict[str, Any]] = []
        self._display: CellEndDisplay | None = None

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def chart(self):
        return sla_probes(self.frame, ttft_ms=self.ttft_ms, tpot_ms=self.tpot_ms)

    def _bundle(self) -> dict[str, Any]:
        if not self.rows:
            return {"text/plain": "no probe yet"}
        if is_headless():
            return picture_bundle(self.chart())
        bundle = self.chart()._repr_mimebundle_()
        return bundle[0] if isinstance(bundle, tuple) else bundle  # altair returns (data, metadata) or data

    def show(self) -> LiveProbes:
        from IPython.display import display

        self._display = CellEndDisplay(display(self._bundle(), raw=True, display_id=True), self._bundle)
        return self

    def add(self, row: dict[str, Any], engine: str = "") -> None:
        """One probe's row (from `generation.server.generation_probe`'s `on_probe`): drawn at once
        live, when the cell ends headless (a PNG per probe is time nobody sees)."""
        keep = ("offered_per_s", "ttft_p99_ms", "tpot_p99_ms", "passed", "output_tokens_per_s")
        entry = {k: row.get(k) for k in keep}
        self.rows.append({"engine": engine or row.get("engine", ""), **entry})
        if self._display is not None:
            self._display.refresh() if is_headless() else self._display.redraw()
