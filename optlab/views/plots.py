"""Altair charts of measured results: pure functions from DataFrames to `alt.Chart`s.

They never display anything and never measure: they select, label and draw rows that
a Study already produced. Error rows are left out; reference rows (measured on another
machine) are drawn as hollow diamonds, labelled, and kept off the Pareto frontier.
Every chart carries the optlab theme (also registered as altair theme "optlab").
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from optlab.study.columns import COLUMNS, column, higher_is_better
from optlab.study.columns import title as axis_title
from optlab.study.frontier import SERVED_COLUMNS, sla_constraints, vega_outside

FAMILIES = ("baseline", "quantization", "pruning", "distillation", "compilation", "chain")
FAMILY_COLORS = ("#4c4c4c", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728")
_EXTRA_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
SHAPES = {"ok": "circle", "reference": "diamond"}
SELECTION = "pick"  # name of the click selection on Pareto points (JupyterChart.selections.pick)
POINTS = "candidates"  # name of the Pareto chart's point layer: its SVG group has class "candidates_marks"

# Every figure a tooltip may show, in this order; labels and formats come from optlab.study.columns.
TOOLTIP_COLUMNS = (
    "candidate", "recipe", "family", "runtime", "device", "status", "noisy", "p50_ms", "p95_ms", "p99_ms",
    "throughput_per_s", "size_mb", "peak_rss_mb", "cold_start_ms", "metric", "quality", "quality_drop",
    "quality_drop_ci_low", "quality_drop_ci_high", "agreement", "cost_per_1k_usd", "cost_per_1m_usd",
    "batch_size", "threads", "cpu_model", "throughput_at_sla_per_s", "serving_policy", "source",
)
# Fields a chart computes to draw (names, positions, mark styles): not figures, so not in the Column table.
CHART_FIELDS = ("label", "short_label", "measured", "marked", "mark_size_mb", "x_drawn", "y_drawn")
# Derived views of the Column table, kept under their old names for callers that read them.
FIGURES: dict[str, str | None] = {name: column(name).d3 for name in TOOLTIP_COLUMNS}
TITLES: dict[str, str] = {c.name: c.title for c in COLUMNS if c.numeric}


def theme() -> dict[str, Any]:
    """The optlab look: one font, quiet grid, legends on the right."""
    return {
        "config": {
            "font": "DejaVu Sans, Helvetica, Arial, sans-serif",
            "view": {"continuousWidth": 460, "continuousHeight": 300, "stroke": None},
            "axis": {"labelFontSize": 11, "titleFontSize": 12, "gridColor": "#e6e6e6",
                     "domainColor": "#888888", "tickColor": "#888888"},
            "legend": {"labelFontSize": 11, "titleFontSize": 12, "orient": "right"},
            "title": {"fontSize": 14, "anchor": "start", "subtitleColor": "#666666"},
            "point": {"filled": True, "size": 80},
            "line": {"strokeWidth": 2},
            "background": "white",
        }
    }


def _register_theme() -> None:
    import altair as alt

    if "optlab" not in alt.theme.names():
        alt.theme.register("optlab", enable=False)(theme)


def _themed(chart):
    """Apply the theme to a top-level chart (explicitly, so it holds whatever theme is active)."""

    _register_theme()
    return chart.configure(**theme()["config"]) if hasattr(chart, "configure") else chart


def bare(chart):
    """The chart without its theme config, for composing with `alt.layer/hconcat/vconcat`."""
    import altair as alt

    chart = chart.copy(deep=True)
    chart.config = alt.Undefined
    return chart


# --- data preparation (selection and labels only; nothing is measured) ----------------

def _require(df, columns: Iterable[str], chart: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{chart} needs the column(s) {missing}, which the DataFrame lacks "
            f"(it has {list(df.columns)}). Pass a Study's `.results` (or rename your columns)."
        )


def drawable(df):
    """Rows a chart may draw: error and skipped rows (no figures) out; `status` filled with "ok"
    where absent."""
    df = df.copy()
    if "status" not in df.columns:
        df["status"] = "ok"
    df["status"] = df["status"].fillna("ok").astype(str)
    return df[~df["status"].isin(["error", "skipped"])].reset_index(drop=True)


def _label(df):
    tag = np.where(df["status"].to_numpy() == "reference", " (reference)", "")
    return df["candidate"].astype(str) + tag


MEASURED = ("on this machine", "reference (another machine)")  # the shape legend's two entries
SHORT_LABEL_CHARS = 42  # a legend entry; the full recipe is in the tooltip and the details


def short_labels(names) -> list[str]:
    """Legend-sized candidate names: keyword names dropped ("quantize(scheme=dynamic-int8,
    runtime=onnxruntime)" -> "quantize(dynamic-int8, onnxruntime)"), long ones cut in the middle
    with "…" (the start says the technique, the end the variant or machine); names that would
    still read alike get " #2", " #3". The full recipe stays in the tooltip and the details."""
    names = [str(n) for n in names]
    unique = list(dict.fromkeys(names))  # a name repeats in long frames (one row per batch size)
    keep_end = SHORT_LABEL_CHARS // 3
    short = []
    for name in unique:
        text = re.sub(r"\b([a-z_]+)=True\b", r"\1", name)  # a flag reads as its name ("per_channel")
        text = re.sub(r"\b[a-z_]+=", "", text)
        text = re.sub(r"\[[^\]]*?(\w+)\]$", r"[\1]", text)  # "[recorded on an H200]" -> "[H200]"
        if len(text) > SHORT_LABEL_CHARS:
            text = text[: SHORT_LABEL_CHARS - keep_end - 1] + "…" + text[-keep_end:]
        short.append(text)
    seen: Counter = Counter()
    counts = Counter(short)
    mapping = {}
    for name, text in zip(unique, short, strict=True):
        seen[text] += 1
        mapping[name] = text if counts[text] == 1 or seen[text] == 1 else f"{text} #{seen[text]}"
    return [mapping[n] for n in names]


def _tidy(data, keep: Iterable[str] = ()):
    """Without helper columns that hold nothing (all missing): they would only leak into tooltips."""
    empty = [c for c in data.columns if c not in keep and data[c].isna().all()]
    return data.drop(columns=empty)


def _finite(values, log: bool) -> np.ndarray:
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    numbers = numbers[np.isfinite(numbers)]
    return numbers[numbers > 0] if log else numbers


def _use_log(name: str, values, log: bool | None) -> bool:
    """Log by default for figures that spread over decades (latencies); never with a value <= 0."""
    found = column(name)
    want = bool(found and found.log) if log is None else log
    numbers = _finite(values, False)
    return bool(want and len(numbers) and (numbers > 0).all())


def _extent(values, log: bool) -> tuple[float, float] | None:
    """The span an axis shows, in data units: the values' range, or around a lone value
    (x/2 to 2x on a log axis, +-5% on a linear one) so a one-point chart has honest ticks."""
    numbers = _finite(values, log)
    if not len(numbers):
        return None
    low, high = float(numbers.min()), float(numbers.max())
    if low < high:
        return low, high
    if log:
        return low / 2, high * 2
    pad = abs(low) * 0.05 or 1.0
    # a lone value >= 0 (a rate of 0/s served, a size) gets no negative ticks ("-1 requests/s")
    return (max(low - pad, 0.0) if low >= 0 else low - pad), high + pad


def _scale(values, log: bool):
    import altair as alt

    options: dict[str, Any] = {"type": "log"} if log else {"zero": False}
    numbers = _finite(values, log)
    if len(numbers) and numbers.min() == numbers.max():
        return alt.Scale(domain=list(_extent(values, log)), **options)
    return alt.Scale(nice=True, **options)


def _position(channel: str, field: str, scale, title_text: str | None = None, name: str | None = None):
    """An x or y encoding with the Column table's title and compact tick format (ticks never collide)."""
    import altair as alt

    found = column(name or field)
    axis = alt.Axis(labelOverlap=True, format=found.axis) if found and found.axis else alt.Axis(labelOverlap=True)
    if getattr(scale, "type", None) == "log":
        axis.tickCount = 6  # a log axis otherwise labels every 2..9 of each decade
    encoding = alt.X if channel == "X" else alt.Y
    return encoding(f"{field}:Q", title=title_text or axis_title(name or field), scale=scale, axis=axis)


def _spread(data, x: str, y: str, log: bool, width: int, height: int, near_px: float = 12.0):
    """`x_drawn`/`y_drawn`: where to draw each point. Points closer than `near_px` on the chart
    are moved onto a small circle round their middle, so none hides another (3 px apart was
    invisible); the measured figures stay in x and y (the tooltip's)."""
    xs, ys = (_as_floats(data[c]) for c in (x, y))
    data = data.assign(x_drawn=xs, y_drawn=ys)
    ok = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if log else True)
    span_x, span_y = _extent(xs[ok], log), _extent(ys[ok], False)
    if ok.sum() < 2 or span_x is None or span_y is None:
        return data
    tx = np.log10(np.where(ok, xs, 1.0)) if log else xs
    lo_x, hi_x = (np.log10(span_x[0]), np.log10(span_x[1])) if log else span_x
    px = (tx - lo_x) / (hi_x - lo_x) * width
    py = (ys - span_y[0]) / (span_y[1] - span_y[0]) * height
    moved_x, moved_y = px.copy(), py.copy()
    for group in _clusters(px, py, ok, near_px):
        centre_x, centre_y = px[group].mean(), py[group].mean()
        for k, i in enumerate(group):
            angle = 2 * np.pi * k / len(group) + np.pi / 4
            moved_x[i] = centre_x + near_px * 0.8 * np.cos(angle)
            moved_y[i] = centre_y + near_px * 0.8 * np.sin(angle)
    back_x = moved_x / width * (hi_x - lo_x) + lo_x
    drawn_x = np.where(ok, 10 ** back_x if log else back_x, xs)
    drawn_y = np.where(ok, moved_y / height * (span_y[1] - span_y[0]) + span_y[0], ys)
    return data.assign(x_drawn=drawn_x, y_drawn=drawn_y)


def _as_floats(values) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _clusters(px, py, ok, near_px: float) -> list[list[int]]:
    """Groups of points (positions) that lie within `near_px` of another of the group."""
    left = [i for i in np.flatnonzero(ok)]
    groups = []
    while left:
        group, frontier = [left.pop(0)], 0
        while frontier < len(group):
            i = group[frontier]
            near = [j for j in left if np.hypot(px[i] - px[j], py[i] - py[j]) < near_px]
            group += near
            left = [j for j in left if j not in near]
            frontier += 1
        if len(group) > 1:
            groups.append(group)
    return groups


def _measured_shape(data):
    """Circles for this machine's rows, diamonds for reference rows, in the legend only when
    there are reference rows (never as text labels over the points)."""
    import altair as alt

    has_reference = bool((data["measured"] == MEASURED[1]).any()) if "measured" in data.columns else False
    return alt.Shape("measured:N", scale=alt.Scale(domain=list(MEASURED), range=["circle", "diamond"]),
                     title="measured", legend=alt.Legend(labelLimit=220) if has_reference else None)


def _columns(df, wanted: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for c in wanted:
        if c in df.columns and c not in seen:
            seen.append(c)
    return seen


def _tooltip(df, first: Iterable[str] = ()) -> list:
    """Tooltips titled by column name (units are in the names, and the browser test reads a point's
    figures back from its aria-label by those names), formatted by the Column table."""
    import altair as alt

    out = []
    for col in _columns(df, [*first, *TOOLTIP_COLUMNS]):
        fmt = getattr(column(col), "d3", None)
        kind = "quantitative" if _is_numeric(df[col]) else "nominal"
        if fmt and kind == "quantitative":
            out.append(alt.Tooltip(field=col, type=kind, format=fmt, title=col))
        else:
            out.append(alt.Tooltip(field=col, type=kind, title=col))
    return out


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _family_scale(values: Iterable[str]):
    import altair as alt

    extra = sorted({str(v) for v in values} - set(FAMILIES))
    domain = [*FAMILIES, *extra]
    palette = [*FAMILY_COLORS, *(_EXTRA_COLORS * (1 + len(extra) // len(_EXTRA_COLORS)))]
    return alt.Scale(domain=domain, range=palette[: len(domain)])


def _family_color(df, legend: bool = True):
    import altair as alt

    if "family" not in df.columns:
        return alt.value(FAMILY_COLORS[1])
    return alt.Color("family:N", scale=_family_scale(df["family"].dropna()),
                     title="technique family", legend=alt.Legend() if legend else None)


def _status_shape():
    import altair as alt

    return alt.Shape("status:N", scale=alt.Scale(domain=list(SHAPES), range=list(SHAPES.values())),
                     title="measured")


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
    from optlab.study.frontier import pareto_front as _front

    metric = _metric(df)
    return _front(df, x, y, minimize_x=lower_is_better(x, metric), maximize_y=not lower_is_better(y, metric))


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


# --- the charts ----------------------------------------------------------------------

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
    params = [alt.param(name=rule.name, value=rule.limit) for rule in sla]
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
    from optlab.views.rendering import to_svg as _to_svg

    return _to_svg(chart)


def to_png(chart, scale: float = 2.0) -> bytes:
    from optlab.views.rendering import to_png as _to_png

    return _to_png(chart, scale=scale)


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
