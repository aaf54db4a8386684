"""Altair charts of measured results: pure functions from DataFrames to `alt.Chart`s.

They never display anything and never measure: they select, label and draw rows that
a Study already produced. Error rows are left out; reference rows (measured on another
machine) are drawn as hollow diamonds, labelled, and kept off the Pareto frontier.
Every chart carries the optlab theme (also registered as altair theme "optlab").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from optlab.study.columns import column
from optlab.study.columns import title as axis_title
from optlab.views import rendering
from optlab.views.chart_axes import (  # noqa: F401 - re-exported: other charts and callers import them from here
    _as_floats,
    _clusters,
    _extent,
    _finite,
    _position,
    _scale,
    _spread,
    _tidy,
    _use_log,
)
from optlab.views.chart_base import (  # noqa: F401 - re-exported: other charts and callers import them from here
    _EXTRA_COLORS,
    CHART_FIELDS,
    FAMILIES,
    FAMILY_COLORS,
    FIGURES,
    MEASURED,
    POINTS,
    SELECTION,
    SHAPES,
    SHORT_LABEL_CHARS,
    TITLES,
    TOOLTIP_COLUMNS,
    _columns,
    _family_color,
    _family_scale,
    _is_numeric,
    _label,
    _measured_shape,
    _register_theme,
    _require,
    _status_shape,
    _themed,
    _tooltip,
    bare,
    drawable,
    short_labels,
    theme,
)
from optlab.views.pareto import (  # noqa: F401 - re-exported: the Pareto chart's home is optlab.views.pareto
    _metric,
    _pareto_data,
    _pareto_subtitle,
    _points,
    _recommended_marks,
    _sla_params,
    _sla_region,
    baseline_quality,
    lower_is_better,
    pareto_chart,
    pareto_front,
)


def latency_chart(samples, kind: str = "box", *, title: str | None = None, width: int = 460):
    """Latency distribution per candidate from raw samples (columns candidate, latency_ms):
    kind="box" (box plot, whiskers at min/max) or "ecdf" (cumulative share per latency)."""
    import altair as alt

    _require(samples, ["candidate", "latency_ms"], "latency_chart")
    if kind not in ("box", "ecdf"):
        raise ValueError(f"latency_chart kind={kind!r} is not known; use kind='box' or kind='ecdf'.")
    rows = drawable(samples)
    rows["label"] = _label(rows)
    data = rows[_columns(rows, ["label", "candidate", "status", "family", "latency_ms"])]
    color = (_family_color(data) if "family" in data.columns
             else alt.Color("label:N", title="candidate"))
    if kind == "box":
        order = data.groupby("label")["latency_ms"].median().sort_values().index.tolist()
        chart = alt.Chart(data).mark_boxplot(extent="min-max", size=14).encode(
            y=alt.Y("label:N", title=None, sort=order),
            x=alt.X("latency_ms:Q", title=axis_title("latency_ms"), scale=alt.Scale(zero=False)),
            color=color,
        ).properties(width=width, height=alt.Step(26))
    else:
        chart = alt.Chart(data).transform_window(
            rank="rank()", sort=[alt.SortField("latency_ms")], groupby=["label"],
        ).transform_joinaggregate(n="count()", groupby=["label"]).transform_calculate(
            share="datum.rank / datum.n",
        ).mark_line(interpolate="step-after").encode(
            x=alt.X("latency_ms:Q", title=axis_title("latency_ms"), scale=alt.Scale(zero=False)),
            y=alt.Y("share:Q", title="share of requests at or below", axis=alt.Axis(format="%")),
            color=alt.Color("label:N", title="candidate"),
            strokeDash=alt.StrokeDash("status:N", scale=alt.Scale(domain=["ok", "reference"],
                                                                   range=[[1, 0], [4, 3]]),
                                      title="measured"),
            tooltip=[alt.Tooltip("label:N", title="candidate"),
                     alt.Tooltip("latency_ms:Q", format=".3f"),
                     alt.Tooltip("share:Q", format=".1%")],
        ).properties(width=width, height=300)
    return _themed(chart.properties(title=title or f"Latency distribution ({kind})"))


def throughput_chart(df, *, y: str = "throughput_per_s", title: str | None = None,
                     width: int = 460, height: int = 300):
    """Throughput (or p99) against batch size, one line per candidate: a log2 batch axis with a
    tick at each measured batch size (1, 2, 4, ...; never 1.5), short candidate names in the
    legend (the full recipe in the tooltip), reference rows dashed."""
    import altair as alt

    _require(df, ["candidate", "batch_size", y], "throughput_chart")
    rows = drawable(df)
    rows["label"] = _label(rows)
    rows["short_label"] = short_labels(rows["candidate"]) if len(rows) else []
    rows["measured"] = np.where(rows["status"].to_numpy() == "reference", MEASURED[1], MEASURED[0])
    shown = ["label", "short_label", "measured", "candidate", "status", "family", "batch_size", "throughput_per_s",
             "p50_ms", "p99_ms"]
    data = _tidy(rows[_columns(rows, shown)], keep=("candidate", "batch_size", y))
    batches = sorted({int(b) for b in _finite(data["batch_size"], True)})
    found = column(y)
    values = _finite(data[y], True)
    log_y = bool(len(values) and values.max() > 100 * values.min())  # decades apart: small ones stay visible
    chart = alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("batch_size:Q", title=axis_title("batch_size"), scale=alt.Scale(type="log", base=2),
                axis=alt.Axis(values=batches or None, format="d", labelOverlap=True)),
        y=alt.Y(f"{y}:Q", title=axis_title(y), scale=alt.Scale(type="log") if log_y else alt.Scale(),
                axis=alt.Axis(format=found.axis, labelOverlap=True, tickCount=6) if found and found.axis
                else alt.Axis()),
        color=alt.Color("short_label:N", title="candidate", legend=alt.Legend(labelLimit=300)),
        strokeDash=alt.StrokeDash("measured:N", scale=alt.Scale(domain=list(MEASURED), range=[[1, 0], [4, 3]]),
                                  title="measured", legend=alt.Legend(labelLimit=220)),
        tooltip=_tooltip(data, ["label"]),
    ).properties(width=width, height=height,
                 title=title or f"{axis_title(y)} vs batch size")
    return _themed(chart)


def sweep_chart(df, param: str, y: str | list[str] = "quality", *, series: str = "family",
                title: str | None = None, width: int = 400, height: int = 220):
    """How figures move with one knob (sparsity, bits, temperature...): one line per
    `series` value; several y columns stack vertically with a shared x axis."""
    import altair as alt

    ys = [y] if isinstance(y, str) else list(y)
    _require(df, ["candidate", param, *ys], "sweep_chart")
    rows = drawable(df).dropna(subset=[param])
    rows["label"] = _label(rows)
    if series not in rows.columns:
        rows[series] = "all"
    data = rows[_columns(rows, ["label", series, param, *ys, *TOOLTIP_COLUMNS])]
    color = (_family_color(data) if series == "family"
             else alt.Color(f"{series}:N", title=series))
    panels = []
    for col in ys:
        panels.append(alt.Chart(data).mark_line(point=True).encode(
            x=alt.X(f"{param}:Q", title=param),
            y=alt.Y(f"{col}:Q", title=axis_title(col), scale=alt.Scale(zero=False)),
            color=color, detail=f"{series}:N",
            shape=_status_shape(),
            tooltip=_tooltip(data, ["label", param]),
        ).properties(width=width, height=height))
    chart = panels[0] if len(panels) == 1 else alt.vconcat(*panels)
    return _themed(chart.properties(title=title or f"Sweep over {param}"))


def size_chart(df, value: str = "size_mb", *, title: str | None = None, width: int = 420):
    """Horizontal bars of artifact size (or another figure) per candidate, smallest first."""
    import altair as alt

    _require(df, ["candidate", value], "size_chart")
    rows = drawable(df).dropna(subset=[value])
    rows["label"] = _label(rows)
    data = rows[_columns(rows, ["label", value, *TOOLTIP_COLUMNS])]
    y = alt.Y("label:N", title=None, sort=alt.EncodingSortField(value, order="ascending"))
    fmt = getattr(column(value), "d3", None) or ".3f"
    bars = alt.Chart(data).mark_bar().encode(
        y=y, x=alt.X(f"{value}:Q", title=axis_title(value)),
        color=_family_color(data),
        opacity=alt.condition("datum.status == 'reference'", alt.value(0.45), alt.value(0.95)),
        tooltip=_tooltip(data, ["label"]),
    )
    labels = alt.Chart(data).mark_text(align="left", dx=3, fontSize=10).encode(
        y=y, x=f"{value}:Q", text=alt.Text(f"{value}:Q", format=fmt))
    chart = alt.layer(bars, labels).properties(width=width, height=alt.Step(22),
                                               title=title or axis_title(value))
    return _themed(chart)


# --- export ------------------------------------------------------------------------------

def to_svg(chart) -> str:
    """Render with vl-convert (no browser, no network)."""
    return rendering.to_svg(chart)


def to_png(chart, scale: float = 2.0) -> bytes:
    return rendering.to_png(chart, scale=scale)


def save(chart, path: str | Path) -> Path:
    """Write a chart as .svg, .png or .json (Vega-Lite spec), by the path's suffix."""
    import json

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(to_svg(chart), encoding="utf-8")
    elif suffix == ".png":
        path.write_bytes(to_png(chart))
    elif suffix == ".json":
        path.write_text(json.dumps(chart.to_dict(validate=True), indent=1), encoding="utf-8")
    else:
        raise ValueError(f"save() cannot write {path.name!r}; use a .svg, .png or .json path.")
    return path
