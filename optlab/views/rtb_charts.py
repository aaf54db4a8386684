"""Charts of the real-time-bidding case study: pure functions from its frames to altair charts.

`waterfall` draws the gain of each step from naive to optimized (throughput at the SLA),
`capacity_day` the simulated campaign day (replicas and worst p99 per minute, one line per
scaling policy). They never measure; they read DataFrames, like the other views.
"""
from __future__ import annotations

import textwrap

import pandas as pd

from optlab.views.plots import _require, _themed


def waterfall(goodputs: pd.DataFrame, *, label: str = "deployment", value: str = "throughput_at_sla_per_s"):
    """Bars from each step's level to the next (the gain each change brings), in the frame's order.
    A step without a level (no rate met the SLA) is drawn as no bar and labelled with why (its `note`)."""
    import altair as alt

    _require(goodputs, [label, value], "waterfall")
    levels = [v if v > 0 else None for v in goodputs[value].astype(float).fillna(0.0).tolist()]
    notes = goodputs["note"].fillna("").astype(str).tolist() if "note" in goodputs else [""] * len(levels)
    rows, previous = [], None
    for i, level in enumerate(levels):
        # Labels stay one bar wide (a reason as long as "nothing meets p99 <= 10 ms" printed over
        # its neighbours'); the reason is in the subtitle and the tooltip.
        if level is None:
            gain = "not measured"
        elif previous is None:
            gain = "start" if i == 0 else "first measured"
        else:
            gain = f"x{level / previous:.2f}"
        why = (notes[i] or "no rate met the SLA") if level is None else ""
        rows.append({"step": goodputs[label].iloc[i], "start": previous or 0.0, "end": level or previous or 0.0,
                     "gain": gain, "why": why})
        previous = level if level is not None else previous
    frame = pd.DataFrame(rows)
    frame["up"] = frame["end"] >= frame["start"]
    chart = alt.Chart(frame).mark_bar().encode(
        x=alt.X("step:N", sort=None, title=None), y=alt.Y("start:Q", title="throughput at p99 <= SLA (requests/s)"),
        y2="end:Q", color=alt.Color("up:N", legend=None, scale=alt.Scale(domain=[True, False],
                                                                        range=["#2ca02c", "#d62728"])),
        tooltip=["step", "start", "end", "gain", "why"])
    text = alt.Chart(frame).mark_text(dy=-6).encode(x=alt.X("step:N", sort=None), y="end:Q", text="gain:N")
    missing = [f"{r.step} ({r.why.split(': ')[1] if r.why.count(': ') >= 2 else r.why})" for r in frame.itertuples()
               if r.why]
    subtitle = textwrap.wrap("no bar: no rate met the SLA, " + "; ".join(missing) + ". The machine is busy or the "
                             "SLA too tight (hover a step for more).", 90) if missing else []
    title = alt.TitleParams("what each step gains", subtitle=subtitle) if subtitle else "what each step gains"
    return _themed((chart + text).properties(title=title, width=max(360, 120 * len(frame)), height=260))


def capacity_day(minutes: pd.DataFrame, *, max_p99_ms: float | None = None):
    """Replicas and worst p99 per minute of a simulated day, one line per scaling policy."""
    import altair as alt

    _require(minutes, ["policy", "minute", "replicas", "p99_ms"], "capacity_day")
    frame = minutes.assign(hour=minutes["minute"] / 60.0)
    # symlog packs its ticks near the top: Vega drops labels that would collide (labelOverlap)
    axis = alt.Axis(labelOverlap=True, tickCount=5)
    base = alt.Chart(frame).encode(x=alt.X("hour:Q", title="hour of the day", axis=axis), color=alt.Color("policy:N"))
    replicas = base.mark_line().encode(y=alt.Y("replicas:Q", title="replicas", axis=axis))
    # symlog's automatic ticks (30, 40, 50) still land within a label's height of each other: a 1-2-5 ladder
    # is spread far enough apart on it to never collide
    ladder = alt.Axis(labelOverlap=True, values=[0, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000])
    p99 = base.mark_line().encode(y=alt.Y("p99_ms:Q", title="worst p99 in the minute (ms)",
                                          scale=alt.Scale(type="symlog"), axis=ladder))
    if max_p99_ms is not None:
        p99 = p99 + alt.Chart({"values": [{"sla": max_p99_ms}]}).mark_rule(strokeDash=[4, 4],
                                                                          color="#d62728").encode(y="sla:Q")
    return _themed(alt.vconcat(replicas.properties(height=150, width=480), p99.properties(height=150, width=480),
                               title="a simulated campaign day"))
