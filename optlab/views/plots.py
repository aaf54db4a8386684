"""Altair charts of measured results: pure functions from DataFrames to `alt.Chart`s.

They never display anything and never measure: they select, label and draw rows that
a Study already produced. Error rows are left out; reference rows (measured on another
machine) are drawn as hollow diamonds, labelled, and kept off the Pareto frontier.
Every chart carries the optlab theme (also registered as altair theme "optlab").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

FAMILIES = ("baseline", "quantization", "pruning", "distillation", "compilation", "chain")
FAMILY_COLORS = ("#4c4c4c", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728")
_EXTRA_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
SHAPES = {"ok": "circle", "reference": "diamond"}
SELECTION = "pick"  # name of the click selection on Pareto points (JupyterChart.selections.pick)
POINTS = "candidates"  # name of the Pareto chart's point layer: its SVG group has class "candidates_marks"

# Every figure a tooltip may show, with its d3 format; only columns present are used.
FIGURES: dict[str, str | None] = {
    "candidate": None, "recipe": None, "family": None, "runtime": None, "device": None,
    "status": None, "p50_ms": ".3f", "p95_ms": ".3f", "p99_ms": ".3f",
    "throughput_per_s": ",.0f", "size_mb": ".3f", "peak_rss_mb": ".1f",
    "cold_start_ms": ",.1f", "metric": None, "quality": ".4f", "quality_drop": "+.4f",
    "quality_drop_ci_low": "+.4f", "quality_drop_ci_high": "+.4f", "agreement": ".4f",
    "cost_per_1k_usd": ".6f", "cost_per_1m_usd": ",.4f", "batch_size": "d", "threads": "d",
    "cpu_model": None, "throughput_at_sla_per_s": ",.0f", "serving_policy": None,
}
TITLES = {
    "p50_ms": "p50 latency (ms)", "p95_ms": "p95 latency (ms)", "p99_ms": "p99 latency (ms)",
    "throughput_per_s": "throughput (predictions/s)", "size_mb": "size (MB)",
    "peak_rss_mb": "peak memory (MB)", "cold_start_ms": "cold start (ms)",
    "quality": "quality (higher is better)", "quality_drop": "quality drop vs baseline",
    "agreement": "agreement with baseline", "cost_per_1m_usd": "cost per 1M predictions (USD)",
    "cost_per_1k_usd": "cost per 1k predictions (USD)", "latency_ms": "latency (ms)",
    "batch_size": "batch size", "throughput_at_sla_per_s": "throughput at the SLA, served (requests/s)",
}
_HIGHER_IS_BETTER = ("quality", "agreement", "throughput_per_s", "throughput_at_sla_per_s")


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


def _columns(df, wanted: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for c in wanted:
        if c in df.columns and c not in seen:
            seen.append(c)
    return seen


def _tooltip(df, first: Iterable[str] = ()) -> list:
    import altair as alt

    out = []
    for col in _columns(df, [*first, *FIGURES]):
        fmt = FIGURES.get(col)
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


def lower_is_better(column: str) -> bool:
    """Direction of a figure: latencies, sizes, memory, costs and drops go down."""
    return column not in _HIGHER_IS_BETTER


def pareto_front(df, x: str, y: str):
    """Rows no other row beats on both x and y (directions from the column names), from
    optlab.study.frontier so the chart and the recommendation agree. Reference rows stay off."""
    from optlab.study.frontier import pareto_front as _front

    return _front(df, x, y, minimize_x=lower_is_better(x), maximize_y=not lower_is_better(y))


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
                 height: int = 300):
    """Quality against speed: one point per candidate, coloured by family, sized by
    size_mb, the Pareto frontier as a dashed line, the SLA region shaded, points outside
    the SLA faded and the recommended candidate ringed. SLA limits and the recommended
    name are Vega-Lite params (max_p99_ms, max_quality_drop, recommended), so a live
    JupyterChart can move them without resending the data."""
    import altair as alt

    from optlab.study.frontier import sla_constraints, vega_outside

    _require(df, ["candidate", x, y], "pareto_chart")
    rows = drawable(df)
    base_q = baseline_quality(rows)
    rows["label"] = _label(rows)
    sla = sla_constraints(max_p99_ms=max_p99_ms, max_quality_drop=max_quality_drop)
    keep = _columns(rows, ["label", x, y, "size_mb", *FIGURES, *(c for rule in sla for c in rule.columns)])
    data = rows[keep]
    if "size_mb" in data.columns:
        data = data.assign(mark_size_mb=data["size_mb"].fillna(data["size_mb"].min()))
    front = pareto_front(data, x, y) if frontier else data.iloc[0:0]

    # SLA membership is optlab.study.frontier.Constraint's rule, rendered for Vega: text and chart agree
    params = [alt.param(name=rule.name, value=rule.limit) for rule in sla]
    outside = vega_outside(sla, data.columns)
    faded = [outside] if outside else []
    if recommended is not None:
        params.append(alt.param(name="recommended", value=str(recommended)))
    pick = alt.selection_point(name=SELECTION, fields=["candidate"], on="click", clear="dblclick")

    x_enc = alt.X(f"{x}:Q", title=TITLES.get(x, x), scale=alt.Scale(zero=False, nice=True))
    y_enc = alt.Y(f"{y}:Q", title=TITLES.get(y, y), scale=alt.Scale(zero=False, nice=True))
    layers = []

    region = _sla_region(x, y, max_p99_ms, max_quality_drop, base_q)
    if region is not None:
        layers.append(region)
    if frontier and len(front) > 1:
        layers.append(alt.Chart(front).mark_line(color="#555555", strokeDash=[5, 4], strokeWidth=1.5)
                      .encode(x=x_enc, y=y_enc, order=f"{x}:Q"))

    opacity = (alt.condition(" || ".join(faded), alt.value(0.35), alt.value(0.95)) if faded
               else alt.value(0.95))
    enc: dict[str, Any] = dict(
        x=x_enc, y=y_enc, color=_family_color(data), shape=_status_shape(), opacity=opacity,
        stroke=alt.condition(pick, alt.value("black"), alt.value("white"), empty=False),
        strokeWidth=alt.condition(pick, alt.value(2.5), alt.value(0.8), empty=False),
        tooltip=_tooltip(data, ["label"]),
    )
    if "mark_size_mb" in data.columns:
        enc["size"] = alt.Size("mark_size_mb:Q", title="size (MB)", scale=alt.Scale(range=[60, 600]))
    points = alt.Chart(data, name=POINTS).mark_point(filled=True).encode(**enc).add_params(pick)
    layers.append(points)

    refs = data[data["status"] == "reference"]
    if len(refs):
        layers.append(alt.Chart(refs).mark_text(align="left", dx=9, dy=-7, fontSize=10,
                                                color="#555555", fontStyle="italic")
                      .encode(x=x_enc, y=y_enc, text="label:N"))
    if recommended is not None:
        chosen = alt.Chart(data).transform_filter("datum.candidate == recommended")
        layers.append(chosen.mark_point(shape="circle", filled=False, size=900, color="#d62728",
                                        strokeWidth=2.5).encode(x=x_enc, y=y_enc))
        layers.append(chosen.mark_text(align="left", dx=17, dy=12, fontWeight="bold",
                                       color="#d62728")
                      .encode(x=x_enc, y=y_enc, text=alt.value("recommended")))

    chart = alt.layer(*layers).properties(
        width=width, height=height,
        title=alt.Title(title or f"{TITLES.get(y, y)} vs {TITLES.get(x, x)}",
                        subtitle=_pareto_subtitle(x, y, max_p99_ms, max_quality_drop)))
    if params:
        chart = chart.add_params(*params)
    return _themed(chart)


def _pareto_subtitle(x, y, max_p99_ms, max_quality_drop) -> str:
    better = ("left" if lower_is_better(x) else "right") + " and " + (
        "down" if lower_is_better(y) else "up")
    parts = [f"better is {better}; dashed line: Pareto frontier"]
    if max_p99_ms is not None or max_quality_drop is not None:
        parts.append("shaded: meets the SLA")
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
            x=alt.X("latency_ms:Q", title=TITLES["latency_ms"], scale=alt.Scale(zero=False)),
            color=color,
        ).properties(width=width, height=alt.Step(26))
    else:
        chart = alt.Chart(data).transform_window(
            rank="rank()", sort=[alt.SortField("latency_ms")], groupby=["label"],
        ).transform_joinaggregate(n="count()", groupby=["label"]).transform_calculate(
            share="datum.rank / datum.n",
        ).mark_line(interpolate="step-after").encode(
            x=alt.X("latency_ms:Q", title=TITLES["latency_ms"], scale=alt.Scale(zero=False)),
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
    """Throughput (or p99) against batch size, one line per candidate (log2 batch axis)."""
    import altair as alt

    _require(df, ["candidate", "batch_size", y], "throughput_chart")
    rows = drawable(df)
    rows["label"] = _label(rows)
    data = rows[_columns(rows, ["label", "candidate", "status", "family", "batch_size",
                                "throughput_per_s", "p50_ms", "p99_ms"])]
    chart = alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("batch_size:Q", title=TITLES["batch_size"], scale=alt.Scale(type="log", base=2)),
        y=alt.Y(f"{y}:Q", title=TITLES.get(y, y)),
        color=alt.Color("label:N", title="candidate"),
        strokeDash=alt.StrokeDash("status:N", scale=alt.Scale(domain=["ok", "reference"],
                                                               range=[[1, 0], [4, 3]]),
                                  title="measured"),
        tooltip=_tooltip(data, ["label"]),
    ).properties(width=width, height=height,
                 title=title or f"{TITLES.get(y, y)} vs batch size")
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
    data = rows[_columns(rows, ["label", series, param, *ys, *FIGURES])]
    color = (_family_color(data) if series == "family"
             else alt.Color(f"{series}:N", title=series))
    panels = []
    for col in ys:
        panels.append(alt.Chart(data).mark_line(point=True).encode(
            x=alt.X(f"{param}:Q", title=param),
            y=alt.Y(f"{col}:Q", title=TITLES.get(col, col), scale=alt.Scale(zero=False)),
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
    data = rows[_columns(rows, ["label", value, *FIGURES])]
    y = alt.Y("label:N", title=None, sort=alt.EncodingSortField(value, order="ascending"))
    fmt = FIGURES.get(value) or ".3f"
    bars = alt.Chart(data).mark_bar().encode(
        y=y, x=alt.X(f"{value}:Q", title=TITLES.get(value, value)),
        color=_family_color(data),
        opacity=alt.condition("datum.status == 'reference'", alt.value(0.45), alt.value(0.95)),
        tooltip=_tooltip(data, ["label"]),
    )
    labels = alt.Chart(data).mark_text(align="left", dx=3, fontSize=10).encode(
        y=y, x=f"{value}:Q", text=alt.Text(f"{value}:Q", format=fmt))
    chart = alt.layer(bars, labels).properties(width=width, height=alt.Step(22),
                                               title=title or TITLES.get(value, value))
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
