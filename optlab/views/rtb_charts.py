"""Charts of the real-time-bidding case study: pure functions from its frames to altair charts.

`waterfall` draws the gain of each step from naive to optimized (throughput at the SLA),
`capacity_day` the simulated campaign day (replicas and worst p99 per minute, one line per
scaling policy). They never measure; they read DataFrames, like the other views.
"""
from __future__ import annotations

import pandas as pd

from optlab.views.plots import _require, _themed


def waterfall(goodputs: pd.DataFrame, *, label: str = "deployment", value: str = "throughput_at_sla_per_s"):
    """Bars from each step's level to the next (the gain each change brings), in the frame's order."""
    import altair as alt

    _require(goodputs, [label, value], "waterfall")
    levels = goodputs[value].astype(float).tolist()
    rows = [{"step": goodputs[label].iloc[0], "start": 0.0, "end": levels[0], "gain": "start"}]
    for i in range(1, len(levels)):
        rows.append({"step": goodputs[label].iloc[i], "start": levels[i - 1], "end": levels[i],
                     "gain": f"x{levels[i] / levels[i - 1]:.2f}" if levels[i - 1] else "n/a"})
    frame = pd.DataFrame(rows)
    frame["up"] = frame["end"] >= frame["start"]
    chart = alt.Chart(frame).mark_bar().encode(
        x=alt.X("step:N", sort=None, title=None), y=alt.Y("start:Q", title="throughput at p99 <= SLA (requests/s)"),
        y2="end:Q", color=alt.Color("up:N", legend=None, scale=alt.Scale(domain=[True, False],
                                                                        range=["#2ca02c", "#d62728"])),
        tooltip=["step", "start", "end", "gain"])
    text = alt.Chart(frame).mark_text(dy=-6).encode(x=alt.X("step:N", sort=None), y="end:Q", text="gain:N")
    return _themed((chart + text).properties(title="what each step gains", width=360, height=260))


def capacity_day(minutes: pd.DataFrame, *, max_p99_ms: float | None = None):
    """Replicas and worst p99 per minute of a simulated day, one line per scaling policy."""
    import altair as alt

    _require(minutes, ["policy", "minute", "replicas", "p99_ms"], "capacity_day")
    frame = minutes.assign(hour=minutes["minute"] / 60.0)
    base = alt.Chart(frame).encode(x=alt.X("hour:Q", title="hour of the day"), color=alt.Color("policy:N"))
    replicas = base.mark_line().encode(y=alt.Y("replicas:Q", title="replicas"))
    p99 = base.mark_line().encode(y=alt.Y("p99_ms:Q", title="worst p99 in the minute (ms)",
                                          scale=alt.Scale(type="symlog")))
    if max_p99_ms is not None:
        p99 = p99 + alt.Chart({"values": [{"sla": max_p99_ms}]}).mark_rule(strokeDash=[4, 4],
                                                                          color="#d62728").encode(y="sla:Q")
    return _themed(alt.vconcat(replicas.properties(height=150, width=480), p99.properties(height=150, width=480),
                               title="a simulated campaign day"))
