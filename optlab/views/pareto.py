"""The Pareto chart: quality against speed, one point per candidate, the frontier, the SLA
region and the recommended candidate, with directions and the SLA rule from optlab.study
(columns and frontier) so that the chart and the recommendation cannot disagree.
Altair is imported inside the functions that build the chart: `import optlab` stays free of it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from optlab.study.columns import column, higher_is_better
from optlab.study.columns import title as axis_title
from optlab.study.frontier import SERVED_COLUMNS, sla_constraints, vega_outside
from optlab.study.frontier import pareto_front as frontier_pareto_front
from optlab.views.chart_axes import _position, _scale, _spread, _tidy, _use_log
from optlab.views.chart_base import (
    MEASURED,
    POINTS,
    SELECTION,
    TOOLTIP_COLUMNS,
    _columns,
    _family_color,
    _label,
    _measured_shape,
    _require,
    _themed,
    _tooltip,
    drawable,
    short_labels,
)


def lower_is_better(name: str, metric: str | None = None) -> bool:
    """Direction of a figure, from the Column table: latencies, sizes, memory, costs and drops go
    down; quality goes the way its metric does (accuracy up, mae down)."""
    return not higher_is_better(name, metric)


def _metric(df) -> str | None:
    """The rows' one quality metric (None when absent or mixed): it sets quality's direction."""
    if "metric" not in df.columns:
        return None
    found = {str(m) for m in df["metric"].dropna()}
    return found.pop() if len(found) == 1 else None


def pareto_front(df, x: str, y: str):
    """Rows no other row beats on both x and y (directions from the column names), from
    optlab.study.frontier so the chart and the recommendation agree. Reference rows stay off."""
    metric = _metric(df)
    return frontier_pareto_front(df, x, y, minimize_x=lower_is_better(x, metric),
                                 maximize_y=not lower_is_better(y, metric))


def baseline_quality(df) -> float | None:
    """Quality of the baseline: its own row if present, else quality + quality_drop."""
    if "quality" not in df.columns:
        return None
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if "family" in ok.columns and (ok["family"] == "baseline").any():
        value = ok.loc[ok["family"] == "baseline", "quality"].dropna()
        if len(value):
            return float(value.iloc[0])
    if "quality_drop" in ok.columns:
        implied = (ok["quality"] + ok["quality_drop"]).dropna()
        if len(implied):
            return float(implied.median())
    return None


def pareto_chart(df, x: str = "p99_ms", y: str = "quality", *, max_p99_ms: float | None = None,
                 max_quality_drop: float | None = None, recommended: str | None = None,
                 frontier: bool = True, title: str | None = None, width: int = 460,
                 height: int = 300, log_x: bool | None = None):
    """Quality against speed: one point per candidate, coloured by family, sized by size_mb,
    reference rows (another machine) as diamonds, the Pareto frontier as a dashed line, the SLA
    region shaded, points outside the SLA faded and the recommended candidate ringed.
    Latency axes are logarithmic unless `log_x=False` (one slow point no longer squashes the
    rest); points that would overlap are spread a few pixels apart (their tooltips keep the
    measured figures) and a click picks the point nearest the pointer. SLA limits and the
    recommended name are Vega-Lite params (max_p99_ms, max_quality_drop, recommended), so a live
    JupyterChart can move them without resending the data."""
    import altair as alt

    _require(df, ["candidate", x, y], "pareto_chart")
    rows = drawable(df)
    base_q = baseline_quality(rows)
    data = _pareto_data(rows, x, y)
    log = _use_log(x, data[x], log_x)
    data = _spread(data, x, y, log, width, height)
    front = pareto_front(data, x, y) if frontier else data.iloc[0:0]
    params, faded = _sla_params(data, max_p99_ms, max_quality_drop, recommended)
    pick = alt.selection_point(name=SELECTION, fields=["candidate"], on="click", clear="dblclick", nearest=True)
    x_scale, y_scale = _scale(data[x], log), _scale(data[y], False)
    x_enc, y_enc = _position("X", x, x_scale), _position("Y", y, y_scale)

    layers = []
    region = _sla_region(x, y, max_p99_ms, max_quality_drop, base_q)
    if region is not None:
        layers.append(region)
    if frontier and len(front) > 1:
        layers.append(alt.Chart(front).mark_line(color="#555555", strokeDash=[5, 4], strokeWidth=1.5)
                      .encode(x=x_enc, y=y_enc, order=f"{x}:Q"))
    layers.append(_points(data, x, y, x_scale, y_scale, faded, pick))
    if recommended is not None:
        layers += _recommended_marks(data, x, x_enc, y_enc)

    chart = alt.layer(*layers).properties(
        width=width, height=height,
        title=alt.Title(title or f"{axis_title(y)} vs {axis_title(x)}",
                        subtitle=_pareto_subtitle(x, y, max_p99_ms, max_quality_drop, data)))
    if params:
        chart = chart.add_params(*params)
    return _themed(chart)


def _pareto_data(rows, x: str, y: str):
    """The columns a Pareto chart draws and shows: labels, figures, where each was measured."""
    rows = rows.copy()
    rows["label"] = _label(rows)
    rows["short_label"] = short_labels(rows["candidate"])
    rows["measured"] = np.where(rows["status"].to_numpy() == "reference", MEASURED[1], MEASURED[0])
    shown = ["label", "short_label", "measured", x, y, "size_mb", "family", *SERVED_COLUMNS, *TOOLTIP_COLUMNS]
    data = _tidy(rows[_columns(rows, shown)], keep=("candidate", x, y))
    if "size_mb" in data.columns:
        data = data.assign(mark_size_mb=data["size_mb"].fillna(data["size_mb"].min()))
    return data


def _sla_params(data, max_p99_ms, max_quality_drop, recommended) -> tuple[list, list[str]]:
    """The chart's params and the Vega expression of "outside the SLA": the rule of
    optlab.study.frontier.Constraint itself, so the chart and the sentence cannot disagree."""
    import altair as alt

    sla = sla_constraints(max_p99_ms=max_p99_ms, max_quality_drop=max_quality_drop)
    # both limits are always params (null = no limit): a live explorer sets them as someone types,
    # and a chart drawn without one answered "Unrecognized signal name: max_p99_ms" in the browser
    limits = {"max_p99_ms": max_p99_ms, "max_quality_drop": max_quality_drop}
    params = [alt.param(name=name, value=None if limit is None else float(limit)) for name, limit in limits.items()]
    outside = vega_outside(sla, data.columns)
    if recommended is not None:
        params.append(alt.param(name="recommended", value=str(recommended)))
    return params, [outside] if outside else []


def _points(data, x: str, y: str, x_scale, y_scale, faded: list[str], pick):
    """The candidates, drawn where `_spread` put them (a few pixels apart when they would overlap)."""
    import altair as alt

    opacity = (alt.condition(" || ".join(faded), alt.value(0.35), alt.value(0.95)) if faded
               else alt.value(0.95))
    enc: dict[str, Any] = dict(
        x=_position("X", "x_drawn", x_scale, axis_title(x), x), y=_position("Y", "y_drawn", y_scale, axis_title(y), y),
        color=_family_color(data), shape=_measured_shape(data), opacity=opacity,
        stroke=alt.condition(pick, alt.value("black"), alt.value("white"), empty=False),
        strokeWidth=alt.condition(pick, alt.value(2.5), alt.value(0.8), empty=False),
        tooltip=_tooltip(data, ["label"]),
    )
    if "noisy" in data.columns:
        enc["strokeDash"] = alt.condition("datum.noisy == true", alt.value([2, 2]), alt.value([1, 0]))
    if "mark_size_mb" in data.columns:
        enc["size"] = alt.Size("mark_size_mb:Q", title=axis_title("size_mb"), scale=alt.Scale(range=[60, 600]),
                               legend=alt.Legend(format=column("size_mb").axis, tickCount=3))
    return alt.Chart(data, name=POINTS).mark_point(filled=True).encode(**enc).add_params(pick)


def _recommended_marks(data, x: str, x_enc, y_enc) -> list:
    """A red ring round the recommended point, named in the legend rather than by a word on the
    plot (a word there collides with axes, points or the legend wherever the point sits)."""
    import altair as alt

    chosen = alt.Chart(data).transform_filter("datum.candidate == recommended").transform_calculate(
        marked="'recommended'")
    ring = chosen.mark_point(shape="circle", filled=False, size=900, strokeWidth=2.5)
    stroke = alt.Stroke("marked:N", scale=alt.Scale(domain=["recommended"], range=["#d62728"]),
                        legend=alt.Legend(title=None, symbolStrokeWidth=2.5))
    return [ring.encode(x=x_enc, y=y_enc, stroke=stroke)]


def _pareto_subtitle(x, y, max_p99_ms, max_quality_drop, data=None) -> str:
    better = ("left" if lower_is_better(x) else "right") + " and " + (
        "down" if lower_is_better(y, None if data is None else _metric(data)) else "up")
    parts = [f"better is {better}; dashed line: Pareto frontier"]
    if max_p99_ms is not None or max_quality_drop is not None:
        parts.append("shaded: meets the SLA")
    if data is not None and "noisy" in data.columns and data["noisy"].fillna(False).astype(bool).any():
        parts.append("dotted outline: noisy (busy machine)")
    return "; ".join(parts)


def _sla_region(x, y, max_p99_ms, max_quality_drop, base_q):
    """A shaded rect over the acceptable region, its edges bound to the SLA params."""
    import altair as alt

    if max_p99_ms is None and max_quality_drop is None:
        return None
    # The datum (bound to a param) sits on the primary channel, the plot edge on x2/y2:
    # Vega-Lite only draws the rect with that arrangement.
    enc: dict[str, Any] = {}
    if x == "p99_ms" and max_p99_ms is not None:
        enc.update(x=alt.X(datum=alt.expr("max_p99_ms"), type="quantitative"), x2=alt.value(0))
    else:
        enc.update(x=alt.value(0), x2=alt.value("width"))
    if max_quality_drop is not None and y == "quality" and base_q is not None:
        enc.update(y=alt.Y(datum=alt.expr(f"{base_q!r} - max_quality_drop"), type="quantitative"),
                   y2=alt.value(0))
    elif max_quality_drop is not None and y == "quality_drop":
        enc.update(y=alt.Y(datum=alt.expr("max_quality_drop"), type="quantitative"),
                   y2=alt.value("height"))
    else:
        enc.update(y=alt.value(0), y2=alt.value("height"))
    return (alt.Chart({"values": [{}]}).mark_rect(color="#2ca02c", opacity=0.12, clip=True)
            .encode(**enc))
