"""One candidate's figures as a small HTML box: what clicking a point in the explorer shows.

Labels, units, formats and intervals come from optlab.study.columns; a figure that was not
measured (or could not be had: inf) is left out rather than printed as nan or inf.
"""
from __future__ import annotations

import html
import math
from typing import Any

from optlab.study.columns import column

# The details pane scrolls past this height. At 1280 px (file browser open) it wraps under the chart,
# so it is wide (its notes wrap onto few lines) and short: a click grows the explorer by at most this.
DETAILS_MAX_HEIGHT_PX = 240
DETAILS_MAX_WIDTH_PX = 640


def _number(row, name: str) -> float:
    try:
        value = float(row.get(name))
    except (TypeError, ValueError):
        return math.nan
    return value


def _figure(row, name: str) -> str | None:
    """`value [low, high]` with the 95% interval when the row has one; None when not measured
    (inf included: a figure that could not be had is left out, never printed as inf)."""
    value = _number(row, name)
    if not math.isfinite(value):
        return None
    found = column(name)
    text = found.format(value)
    low, high = found.ci or (None, None)
    if low and high and math.isfinite(_number(row, low)) and math.isfinite(_number(row, high)):
        text += f" [{found.format(_number(row, low))}, {found.format(_number(row, high))}]"
    return text


# The handful of figures a person wants for one candidate; labels and formats from optlab.study.columns.
DETAILS = ("p50_ms", "p95_ms", "p99_ms", "throughput_per_s", "throughput_at_sla_per_s", "size_mb", "peak_rss_mb",
           "quality", "quality_drop", "agreement", "cost_per_1m_usd")


def _detail_label(name: str, row: dict[str, Any]) -> str:
    found = column(name)
    low, high = found.ci or (None, None)
    with_ci = bool(low) and math.isfinite(_number(row, low)) and math.isfinite(_number(row, high))
    return found.header + (" [95% CI]" if with_ci else "")


def details_html(row: dict[str, Any]) -> str:
    """One candidate's figures as a short table in a bounded-height box (what a click shows)."""
    name = html.escape(str(row.get("candidate")))
    lines = []
    for figure in DETAILS:
        text = _figure(row, figure)
        if text is not None:
            lines.append((_detail_label(figure, row), text))
    what = " · ".join(str(row[k]) for k in ("family", "runtime", "device", "status")
                      if row.get(k) is not None and str(row.get(k)) not in ("", "nan"))
    if row.get("noisy") is True:
        what += " · noisy (measured while the machine was busy)"
    for label, key in (("recipe", "recipe"), ("metric", "metric"), ("error", "error"), ("notes", "notes")):
        value = row.get(key)
        if value is not None and str(value) not in ("", "nan", "None") and not (key == "recipe" and value == row.get(
                "candidate")):
            text = str(value)
            lines.append((label, text if len(text) <= 240 else text[:237] + "..."))
    cell = "padding:1px 6px 1px 0;line-height:1.3;vertical-align:top;text-align:left"
    cells = "".join(f"<tr><th style='{cell};white-space:nowrap'>{html.escape(k)}</th>"
                    f"<td style='{cell}'>{html.escape(v)}</td></tr>" for k, v in lines)
    return (f'<div class="optlab-details" style="max-height:{DETAILS_MAX_HEIGHT_PX}px;overflow-y:auto;'
            f'max-width:{DETAILS_MAX_WIDTH_PX}px;font-size:12px;line-height:1.3"><b>{name}</b><br><small>{html.escape(what)}</small>'
            f"<table style='border-collapse:collapse'>{cells}</table></div>")
