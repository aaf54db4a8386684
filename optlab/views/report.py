"""A study (or several) as one self-contained HTML file, and the compact headline table.

The report needs no network: charts are embedded as SVG images rendered by vl-convert
(base64 data URLs), there is no JavaScript, and every user string is escaped.
"""
from __future__ import annotations

import datetime as _dt
import html
import math
import platform
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from optlab.study.columns import NOT_AVAILABLE, column, unit_of_work
from optlab.study.explanation import noisy_marks

DEFAULT_SLA = {"max_p99_ms": None, "max_quality_drop": 0.01, "objective": "cost"}

# The compact table's columns and the full table's extra ones; headers, formats and digits come
# from optlab.study.columns (one vocabulary for every view).
HEADLINE_COLUMNS = ("candidate", "p50_ms", "p99_ms", "throughput_per_s", "size_mb", "quality", "quality_drop",
                    "agreement", "cost_per_1m_usd")
FULL_EXTRA_COLUMNS = ("family", "runtime", "device", "status", "noisy", "p95_ms", "peak_rss_mb", "cold_start_ms",
                      "metric", "quality_drop_ci_low", "quality_drop_ci_high", "error",
                      # analysts' models: shown only where some row has them (a sequence output; a degenerate sample)
                      "sequence_agreement", "identical_rate", "degenerate_sample")


def _header_and_format(names) -> dict[str, tuple[str, str]]:
    return {name: (column(name).header, column(name).fmt) for name in names}


# column -> (header with unit, python format): derived, kept under their old names for callers
HEADLINE: dict[str, tuple[str, str]] = _header_and_format(HEADLINE_COLUMNS)
FULL_EXTRA: dict[str, tuple[str, str]] = _header_and_format(FULL_EXTRA_COLUMNS)
SPARSE_COLUMNS = ("sequence_agreement", "identical_rate", "degenerate_sample")
ENVIRONMENT_COLUMNS = ("cpu_model", "cpu_flags", "cores", "logical_cores", "device", "gpu_name", "torch_version",
                       "onnxruntime_version", "python_version", "platform")


def _shown(table, column: str) -> bool:
    """A column of the full table is shown when present; a sparse one only where a row has it."""
    if column not in table.columns:
        return False
    if column == "degenerate_sample":
        return bool(table[column].eq(True).any())
    return column not in SPARSE_COLUMNS or bool(table[column].notna().any())


def headline_table(df):
    """The compact table for a README or closing note: candidate, p50/p99 ms, throughput,
    size, quality, drop, agreement, cost per 1M; error rows left out, reference rows kept
    with a `status` column. Numbers stay numbers (rounded)."""
    import pandas as pd

    from optlab.views.plots import drawable

    if df is None or len(df) == 0:
        return pd.DataFrame(columns=list(HEADLINE_COLUMNS))
    rows = drawable(df)
    columns = [c for c in HEADLINE_COLUMNS if c in rows.columns]
    if "candidate" not in columns:
        raise ValueError("headline_table needs a 'candidate' column; pass a Study's `.results`.")
    if (rows["status"] == "reference").any():
        columns.append("status")
    if "noisy" in rows.columns and rows["noisy"].fillna(False).astype(bool).any():
        columns.append("noisy")  # a figure measured on a busy machine says so wherever it is shown
    out = rows[columns].copy()
    for name in columns:
        digits = column(name).digits
        if digits is not None:
            numbers = pd.to_numeric(out[name], errors="coerce")
            out[name] = numbers.where(np.isfinite(numbers)).round(digits)  # inf is "not available", never shown
    marks = noisy_marks(rows)  # timed on a busy machine or with a wide interval: said beside the figures
    if (marks != "").any():
        out["noisy"] = marks
    out = out.reset_index(drop=True)
    out.attrs["unit_of_work"] = unit_of_work(rows)  # generation rows: throughput and cost count requests
    return out


def console_table(df) -> str:
    """The headline table as text for a terminal (the CLI prints it): headers with units and
    numbers formatted from the Column table; a missing figure reads "not available" (the
    headline has dropped inf, so a gap may be either), an empty mark "-"."""
    table = headline_table(df)
    if len(table) == 0:
        return "(no results)"
    headers = [column(name).header for name in table.columns]
    cells = [[column(name).render(value, NOT_AVAILABLE) or "-" for name, value in row.items()]
             for _, row in table.iterrows()]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    left = [not column(name).numeric for name in table.columns]

    def line(values):
        padded = (v.ljust(w) if lft else v.rjust(w) for v, w, lft in zip(values, widths, left, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "not available"
    try:
        import pandas as pd

        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    try:
        text = fmt.format(value)
    except (ValueError, TypeError):
        text = str(value)
    return html.escape(text)


def table_html(df, *, index: bool = False, formats: Mapping[str, tuple[str, str]] | None = None) -> str:
    """An escaped HTML table; known columns get headers with units and number formats."""
    formats = {**HEADLINE, **FULL_EXTRA, **(formats or {})}
    unit = df.attrs.get("unit_of_work", "predictions")
    head = ([""] if index else []) + [formats.get(str(c), (str(c), "{}"))[0].replace("predictions", unit)
                                      for c in df.columns]
    parts = ['<table class="optlab"><thead><tr>']
    parts += [f"<th>{html.escape(h)}</th>" for h in head]
    parts.append("</tr></thead><tbody>")
    for key, row in df.iterrows():
        cells = [f"<th>{html.escape(str(key))}</th>"] if index else []
        for name, value in row.items():
            fmt = formats.get(str(name), (None, "{}"))[1]
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td{" class=num" if numeric else ""}>{_cell(value, fmt)}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _frames(df_or_frames) -> dict[str, Any]:
    import pandas as pd

    if isinstance(df_or_frames, pd.DataFrame):
        return {"results": df_or_frames}
    if hasattr(df_or_frames, "results") and not isinstance(df_or_frames, Mapping):
        return {"study": df_or_frames.results}
    if isinstance(df_or_frames, Mapping):
        out = {}
        for name, value in df_or_frames.items():
            frame = value.results if hasattr(value, "results") else value
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(f"write_report: {name!r} is a {type(value).__name__}; pass DataFrames or Studies")
            out[str(name)] = frame
        return out
    if isinstance(df_or_frames, (list, tuple)):
        return _frames({f"study {i + 1}": f for i, f in enumerate(df_or_frames)})
    raise TypeError("write_report takes a DataFrame, a Study, or a dict {name: DataFrame or Study}; "
                    f"got {type(df_or_frames).__name__}")


def _environment(frames: dict[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for frame in frames.values():
        ok = frame[frame["status"] != "reference"] if "status" in frame.columns else frame
        for name in ENVIRONMENT_COLUMNS:
            if name in ok.columns and name not in env:
                values = ok[name].dropna()
                if len(values):
                    env[name] = values.iloc[0]
    if not env:
        try:
            from optlab.instruments.environment import environment

            env = environment().to_dict()
        except Exception:  # noqa: BLE001 - a report without a machine description is still a report
            env = {"platform": platform.platform(), "python_version": platform.python_version()}
    if given:
        env.update(given.to_dict() if hasattr(given, "to_dict") else dict(given))
    return env


def _recommendation_html(frame, sla: Mapping[str, Any]) -> tuple[str, str | None]:
    """The recommendation as HTML, and the recommended candidate's name (None when there is none)."""
    from optlab.study.frontier import recommend

    try:
        rec = recommend(frame, max_p99_ms=sla.get("max_p99_ms"), max_quality_drop=sla.get("max_quality_drop"),
                        objective=sla.get("objective", "cost"))
    except ValueError as error:
        return f'<p class="rec none">No recommendation: {html.escape(str(error))}</p>', None
    css = "rec" if rec.met else "rec unmet"
    text = f'<p class="{css}"><b>Recommendation:</b> {html.escape(rec.explanation)}</p>'
    if rec.rejected:
        items = "".join(f"<li>{html.escape(r.candidate)}: {html.escape('; '.join(r.reasons))}</li>"
                        for r in rec.rejected)
        text += f"<details><summary>Why not the others</summary><ul>{items}</ul></details>"
    return text, rec.candidate


def _sla_words(sla: Mapping[str, Any]) -> str:
    parts = []
    if sla.get("max_p99_ms") is not None:
        parts.append(f"p99 &le; {html.escape(str(sla['max_p99_ms']))} ms")
    if sla.get("max_quality_drop") is not None:
        parts.append(f"quality drop &le; {html.escape(str(sla['max_quality_drop']))}")
    parts.append(f"objective: {html.escape(str(sla.get('objective', 'cost')))}")
    return ", ".join(parts)


_CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em} .meta{color:#666} table.optlab{border-collapse:collapse;margin:1em 0;font-size:13px}
table.optlab th,table.optlab td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
table.optlab td.num{text-align:right;font-variant-numeric:tabular-nums} img.chart{max-width:100%;margin:.5em 0}
.rec{background:#eef7ee;padding:.6em;border-left:4px solid #2ca02c}
.rec.unmet,.rec.none{background:#fff4e5;border-left-color:#ff7f0e}
"""


def write_report(df_or_frames, path: str | Path, *, title: str = "optlab report",
                 sla: Mapping[str, Any] | None = None, environment: Mapping[str, Any] | None = None,
                 x: str = "p99_ms", y: str = "quality", timings=None) -> Path:
    """Write one self-contained HTML file: per study, the recommendation under `sla`
    (default: quality drop <= 0.01, cheapest), the Pareto chart, and the trade-off table;
    then the combined table, the run times of the notebooks (`timings`, a DataFrame) if
    given, and the environment. Returns the path written."""
    import pandas as pd

    from optlab.views.plots import drawable, pareto_chart
    from optlab.views.rendering import svg_img

    frames = _frames(df_or_frames)
    sla = {**DEFAULT_SLA, **(dict(sla) if sla else {})}
    unknown = set(sla) - set(DEFAULT_SLA)
    if unknown:
        raise ValueError(f"write_report sla has unknown key(s) {sorted(unknown)}; use {sorted(DEFAULT_SLA)}")
    env = _environment(frames, environment)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="meta">Generated {stamp} by optlab. SLA: {_sla_words(sla)}.</p>']
    combined = []
    for name, frame in frames.items():
        body.append(f"<h2>{html.escape(name)}</h2>")
        if len(frame) == 0:
            body.append("<p>No results.</p>")
            continue
        rec_html, chosen = _recommendation_html(frame, sla)
        body.append(rec_html)
        if len(drawable(frame)) and x in frame.columns and y in frame.columns:
            chart = pareto_chart(frame, x=x, y=y, max_p99_ms=sla["max_p99_ms"],
                                 max_quality_drop=sla["max_quality_drop"], recommended=chosen,
                                 title=f"{name}: {y} vs {x}")
            body.append(svg_img(chart))
        errors = frame[frame["status"] == "error"] if "status" in frame.columns else frame.iloc[0:0]
        if len(errors):
            items = "".join(f"<li>{html.escape(str(r.get('candidate')))}: {html.escape(str(r.get('error')))}</li>"
                            for r in errors.to_dict("records"))
            body.append(f"<p>Failed candidates (left out of charts):</p><ul>{items}</ul>")
        combined.append(frame.assign(study=name, noisy=noisy_marks(frame)))
    if combined:
        table = pd.concat(combined, ignore_index=True)
        columns = ["study", *[c for c in [*HEADLINE_COLUMNS, *FULL_EXTRA_COLUMNS] if _shown(table, c)]]
        body.append("<h2>All candidates</h2>")
        body.append(table_html(table[columns]))
    if timings is not None and len(timings):
        body.append("<h2>Notebook run times</h2>")
        body.append(table_html(pd.DataFrame(timings)))
    body.append("<h2>Environment</h2>")
    env_frame = pd.DataFrame({"value": [str(v) for v in env.values()]}, index=[str(k) for k in env])
    body.append(table_html(env_frame, index=True))
    document = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
                + "\n".join(body) + "</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path
