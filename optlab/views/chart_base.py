"""What every optlab chart shares: the theme, the technique families' colours and the shapes
of where a row was measured, which rows and columns a chart draws, legend-sized labels and the
tooltips (titled and formatted from optlab.study.columns).

The charts themselves live in optlab.views.plots (distributions, throughput, sweeps, sizes) and
optlab.views.pareto (quality against speed); axes and point placement in optlab.views.chart_axes.
Altair is imported inside the functions that build encodings: `import optlab` stays free of it.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

import numpy as np

from optlab.study.columns import COLUMNS, column

FAMILIES = ("baseline", "quantization", "pruning", "distillation", "compilation", "chain")
FAMILY_COLORS = ("#4c4c4c", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728")
_EXTRA_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
SHAPES = {"ok": "circle", "reference": "diamond"}
SELECTION = "pick"  # name of the click selection on Pareto points (JupyterChart.selections.pick)
POINTS = "candidates"  # name of the Pareto chart's point layer: its SVG group has class "candidates_marks"

# Every figure a tooltip may show, in this order; labels and formats come from optlab.study.columns.
TOOLTIP_COLUMNS = (
    "candidate", "machine", "recipe", "family", "runtime", "device", "status", "noisy", "p50_ms", "p95_ms", "p99_ms",
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
