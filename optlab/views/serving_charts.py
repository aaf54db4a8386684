"""Charts of serving runs: pure functions from the serving frames to altair charts.

`latency_vs_load` draws `sla.sweep_load` rows (p99 against offered load, one line per policy, the
SLA as a rule), `throughput_at_sla` draws `sla.search_configs` rows (or any frame with a label and
`throughput_at_sla_per_s`), `burst_timeline` draws a `LoadResult.series` (p99 and sheds over time),
`cache_effect` compares runs with and without a cache. They never measure; they read DataFrames, like the other views.
"""
from __future__ import annotations

from optlab.views.plots import _position, _require, _themed


def latency_vs_load(curve, *, max_p99_ms: float | None = None, label: str = "label"):
    """p99 (log) against offered load (log), one line per `label`; points above half the generator's
    headroom are drawn hollow, and the SLA is a dashed rule."""
    import altair as alt

    _require(curve, ["offered_per_s", "p99_ms", label], "latency_vs_load")
    frame = curve.copy()
    frame["flagged"] = frame.get("below_half_headroom", True).eq(False) if "below_half_headroom" in frame else False
    base = alt.Chart(frame).encode(
        x=_position("X", "offered_per_s", alt.Scale(type="log")),
        y=_position("Y", "p99_ms", alt.Scale(type="log")),
        color=alt.Color(f"{label}:N", title="policy"),
        tooltip=[c for c in (label, "offered_per_s", "achieved_per_s", "p50_ms", "p99_ms", "shed", "stopped_early")
                 if c in frame.columns])
    chart = base.mark_line() + base.mark_point(size=60).encode(
        fill=alt.condition("datum.flagged", alt.value("white"), alt.ColorValue("currentColor")))
    if max_p99_ms is not None:
        rule = alt.Chart({"values": [{"sla": max_p99_ms}]}).mark_rule(strokeDash=[4, 4], color="#d62728").encode(
            y="sla:Q")
        chart = chart + rule
    return _themed(chart.properties(title="latency against offered load", width=420, height=260))


def throughput_at_sla(frame, *, label: str = "policy"):
    """Bars of throughput at the SLA per configuration or candidate, best first."""
    import altair as alt

    _require(frame, [label, "throughput_at_sla_per_s"], "throughput_at_sla")
    data = frame[[c for c in frame.columns if c != "curve"]].dropna(subset=["throughput_at_sla_per_s"])
    chart = alt.Chart(data).mark_bar().encode(
        x=_position("X", "throughput_at_sla_per_s", alt.Scale()),
        y=alt.Y(f"{label}:N", sort="-x", title=None),
        tooltip=[c for c in (label, "throughput_at_sla_per_s", "p99_at_sla_load_ms", "workers", "note")
                 if c in data.columns])
    return _themed(chart.properties(title="throughput at the SLA", width=420))


def burst_timeline(series, *, max_p99_ms: float | None = None):
    """p99 per interval over a burst run, with sheds as bars on a second panel."""
    import altair as alt

    _require(series, ["time_s", "p99_ms", "shed", "sent"], "burst_timeline")
    top = alt.Chart(series).mark_line(point=True).encode(
        x=alt.X("time_s:Q", title="time (s)"), y=_position("Y", "p99_ms", alt.Scale()),
        tooltip=["time_s", "sent", "ok", "shed", "p99_ms"])
    if max_p99_ms is not None:
        top = top + alt.Chart({"values": [{"sla": max_p99_ms}]}).mark_rule(
            strokeDash=[4, 4], color="#d62728").encode(y="sla:Q")
    bottom = alt.Chart(series).mark_bar(color="#ff7f0e").encode(
        x=alt.X("time_s:Q", title="time (s)"), y=alt.Y("shed:Q", title="shed"))
    return _themed(alt.vconcat(top.properties(height=200, width=420), bottom.properties(height=80, width=420),
                               title="a burst: p99 and sheds over time"))


def cache_effect(frame, *, label: str = "label"):
    """Side-by-side bars of p99 and achieved throughput for runs with and without a cache (one row per
    run, e.g. `LoadResult.summary` rows), the hit rate in the tooltip."""
    import altair as alt

    _require(frame, [label, "p99_ms", "achieved_per_s"], "cache_effect")
    tooltip = [c for c in (label, "p99_ms", "achieved_per_s", "cache_hit_rate", "cache_bytes_used") if c in frame]
    bars = alt.Chart(frame[[c for c in frame.columns if c in tooltip]]).mark_bar()
    p99 = bars.encode(x=_position("X", "p99_ms", alt.Scale()), y=alt.Y(f"{label}:N", title=None), tooltip=tooltip)
    throughput = bars.encode(x=_position("X", "achieved_per_s", alt.Scale()),
                             y=alt.Y(f"{label}:N", title=None), tooltip=tooltip)
    return _themed(alt.hconcat(p99.properties(width=220), throughput.properties(width=220),
                               title="what the cache changes"))
