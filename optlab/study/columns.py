"""The one vocabulary of figures: what each results column is called, its unit, how it is
written (in Python and in Vega/d3), how many digits a table keeps, and which way is better.

Plots, the report, the explorer's details, the CLI table and the frontier all read `COLUMNS`,
so a new figure (a tokens/s column, say) is added here once and every view labels, formats and
ranks it the same way. It lives in the study layer because the frontier ranks by it; the views
sit above and read it.

A figure a person cannot read as a number has one rule, `not_available` (and `Column.render`,
which applies it): a missing figure (None, NaN) reads NOT_MEASURED unless the table knows better
(the RTB case reads its gaps as NOT_AVAILABLE, its row's note says why), an infinite one
NOT_AVAILABLE, either followed by "(the reason)" where the caller knows it; a missing word is
blank. The notebooks' `readable` tables, the RTB case study's tables and the CLI table all call it.

Interval columns (a figure's 95% interval, e.g. `quality_drop_ci_low`) are not entries of their
own: `column()` derives them from their figure, so they always share its unit and format.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any

from optlab.instruments import metrics

PER_METRIC = "per-metric"  # higher_is_better: the direction comes from the row's metric (accuracy up, mae down)
NOT_MEASURED = "not measured"  # None/NaN: the run did not produce the figure (reference row, error, skipped step)
NOT_AVAILABLE = "not available"  # +-inf: the figure has no finite value (e.g. a rate of zero measured at a busy moment)


def _lacking(value: Any) -> bool:
    """None, NaN, NaT and pandas' NA (without importing pandas: the CLI starts without it)."""
    if value is None:
        return True
    try:
        return bool(value != value)  # only the missing markers differ from themselves
    except (TypeError, ValueError):  # pandas' NA is neither equal nor unequal to itself
        return True


def not_available(value: Any, missing: str = NOT_MEASURED, reason: str | None = None, *,
                  figure: bool = True) -> str | None:
    """The words a person reads instead of `value`, or None when `value` reads as itself.

    A missing figure (None, NaN) reads `missing` (NOT_MEASURED unless the caller knows the gap
    means NOT_AVAILABLE), an infinite one NOT_AVAILABLE, and either gets " (reason)" when the
    caller knows why; a missing word (`figure=False`: an error column on a row that did not
    fail) reads blank. One rule so that no table prints NaN, inf or a private marker."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isinf(float(value)):
        words = NOT_AVAILABLE
    elif isinstance(value, str) or not _lacking(value):
        return None
    elif not figure:
        return ""
    else:
        words = missing
    return f"{words} ({reason})" if reason else words


@dataclass(frozen=True)
class Column:
    """One results column as people see it.

    label: words for an axis or a tooltip, without the unit; short: the compact header of a
    table (defaults to label); unit: "ms", "MB", "/s", "$" or ""; fmt: a Python format string;
    d3: the Vega/d3 format of the exact value (tooltips); axis: the d3 format of axis ticks
    (compact, so ticks never collide); digits: a table's rounding (None: keep as is);
    higher_is_better: True, False, PER_METRIC, or None for words (nothing to rank);
    ci: the names of its 95% interval columns (low, high), if the study records one;
    log: draw on a logarithmic axis by default (figures that spread over decades).
    """

    name: str
    label: str
    unit: str = ""
    fmt: str = "{}"
    d3: str | None = None
    axis: str | None = None
    digits: int | None = None
    higher_is_better: bool | str | None = None
    ci: tuple[str, str] | None = None
    short: str | None = None
    log: bool = False

    @property
    def title(self) -> str:
        """The axis title: label and unit, e.g. "p99 latency (ms)"."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def header(self) -> str:
        """The table header: the short label and unit, e.g. "p99 (ms)"."""
        words = self.short or self.label
        return f"{words} ({self.unit})" if self.unit else words

    @property
    def numeric(self) -> bool:
        return self.d3 is not None

    def format(self, value: Any) -> str:
        """The value as a person reads it; "" for missing, "not available" for inf/nan figures."""
        if value is None:
            return ""
        if isinstance(value, float) and math.isnan(value):
            return ""
        if isinstance(value, float) and math.isinf(value):
            return "not available"
        try:
            return self.fmt.format(value)
        except (ValueError, TypeError):
            return str(value)

    def render(self, value: Any, missing: str = NOT_MEASURED, reason: str | None = None) -> str:
        """The value as a person reads it, never NaN or inf: a figure in this column's format, or
        the words of `not_available` (a missing word of a words column is blank)."""
        words = not_available(value, missing, reason, figure=self.numeric)
        return self.format(value) if words is None else words


def _words(name: str, label: str | None = None) -> Column:
    return Column(name, label or name)


COLUMNS: tuple[Column, ...] = (
    _words("candidate"), _words("recipe"), _words("family"), _words("runtime"), _words("device"),
    _words("status"), _words("metric"), _words("cpu_model", "CPU"), _words("serving_policy", "serving policy"),
    _words("machine"), _words("source"), _words("error"), _words("notes"),
    Column("noisy", "noisy", fmt="{}"),
    Column("p50_ms", "p50 latency", "ms", "{:.3f}", ".3f", "~g", 3, False, ("p50_ci_low_ms", "p50_ci_high_ms"),
           short="p50", log=True),
    Column("p95_ms", "p95 latency", "ms", "{:.3f}", ".3f", "~g", 3, False, short="p95", log=True),
    Column("p99_ms", "p99 latency", "ms", "{:.3f}", ".3f", "~g", 3, False, ("p99_ci_low_ms", "p99_ci_high_ms"),
           short="p99", log=True),
    Column("latency_ms", "latency", "ms", "{:.3f}", ".3f", "~g", 3, False, log=True),
    Column("throughput_per_s", "throughput", "predictions/s", "{:,.0f}", ",.0f", ",~f", 0, True, short="throughput"),
    Column("throughput_at_sla_per_s", "throughput at the SLA, served", "requests/s", "{:,.0f}", ",.0f", ",~f", 0,
           True, short="served at SLA"),
    Column("size_mb", "size", "MB", "{:.3f}", ".3f", "~g", 3, False),
    Column("peak_rss_mb", "peak memory", "MB", "{:.1f}", ".1f", ",~f", 1, False),
    Column("cold_start_ms", "cold start", "ms", "{:,.1f}", ",.1f", ",~f", 1, False),
    Column("quality", "quality", "", "{:.4f}", ".4f", "~g", 4, PER_METRIC),
    Column("quality_drop", "quality drop vs baseline", "", "{:+.4f}", "+.4f", "~g", 4, False,
           ("quality_drop_ci_low", "quality_drop_ci_high"), short="quality drop"),
    Column("agreement", "agreement with baseline", "", "{:.4f}", ".4f", "~g", 4, True, short="agreement"),
    Column("sequence_agreement", "per-position agreement", "", "{:.4f}", ".4f", "~g", 4, True),
    Column("identical_rate", "identical sequences", "", "{:.4f}", ".4f", "~g", 4, True),
    Column("degenerate_sample", "degenerate sample"),
    Column("cost_per_1k_usd", "cost per 1k predictions", "$", "{:.6f}", ".6f", "~g", 6, False, short="cost per 1k"),
    Column("cost_per_1m_usd", "cost per 1M predictions", "$", "{:,.4f}", ",.4f", "~g", 4, False, short="cost per 1M"),
    Column("batch_size", "batch size", "", "{:d}", "d", "d", 0, None),
    Column("threads", "threads", "", "{:d}", "d", "d", 0, None),
    Column("escalated_share", "share escalated to the expensive model", "", "{:.1%}", ".1%", ".0%", 4, False,
           short="escalated"),
    Column("cascade_threshold", "cascade confidence threshold", "", "{:.4f}", ".4f", "~g", 4, None,
           short="threshold"),
    Column("offered_per_s", "offered load", "requests/s", "{:,.0f}", ",.0f", ",~f", 0, None, short="offered"),
    Column("achieved_per_s", "achieved", "requests/s", "{:,.0f}", ",.0f", ",~f", 0, True),
)


# Generation (language-model) figures, named as `vllm bench serve` / guidellm name them: time to first
# token (TTFT), time per output token after the first (TPOT, per request), inter-token latency (ITL, per
# gap), end-to-end latency (E2E), each at p50/p90/p99 with its 95% interval (`ttft_p99_ci_low_ms`, ...).
_GENERATION_LATENCIES = {"ttft": ("time to first token", "TTFT"), "tpot": ("time per output token", "TPOT"),
                         "itl": ("inter-token latency", "ITL"), "e2e": ("end-to-end latency", "E2E")}


def _generation_latency(kind: str, q: int) -> Column:
    words, short = _GENERATION_LATENCIES[kind]
    return Column(f"{kind}_p{q}_ms", f"{words}, p{q}", "ms", "{:,.2f}", ",.2f", "~g", 2, False,
                  (f"{kind}_p{q}_ci_low_ms", f"{kind}_p{q}_ci_high_ms"), short=f"{short} p{q}", log=True)


GENERATION_COLUMNS: tuple[Column, ...] = (
    *(_generation_latency(kind, q) for kind in _GENERATION_LATENCIES for q in (50, 90, 99)),
    Column("output_tokens_per_s", "output tokens per second, all requests", "tokens/s", "{:,.1f}", ",.1f", ",~f", 1,
           True, short="output tokens/s"),
    Column("output_tokens_per_s_per_request_p50", "output tokens per second of one request, p50", "tokens/s",
           "{:,.1f}", ",.1f", ",~f", 1, True, short="tokens/s per request"),
    Column("request_throughput_per_s", "completed requests per second", "requests/s", "{:,.2f}", ",.2f", ",~f", 2,
           True, short="requests/s"),
    Column("goodput_per_s", "goodput (requests within the TTFT and TPOT SLA)", "requests/s", "{:,.2f}", ",.2f",
           ",~f", 2, True, short="goodput"),
    Column("kv_cache_reserved_mb", "KV cache reserved", "MB", "{:,.2f}", ",.2f", ",~f", 2, False,
           short="KV reserved"),
    Column("kv_cache_used_mb", "KV cache used", "MB", "{:,.2f}", ",.2f", ",~f", 2, None, short="KV used"),
    Column("perplexity", "perplexity on the test topics", "", "{:,.2f}", ",.2f", "~g", 2, False,
           ("perplexity_ci_low", "perplexity_ci_high"), short="perplexity"),
    Column("greedy_agreement", "greedy agreement with the fp32 target", "", "{:.4f}", ".4f", "~g", 4, True,
           ("greedy_agreement_ci_low", "greedy_agreement_ci_high"), short="greedy agreement"),
    Column("greedy_prefix_agreement", "greedy output identical until the first divergence", "", "{:.4f}", ".4f",
           "~g", 4, True, short="greedy prefix"),
    Column("greedy_identical_rate", "greedy outputs identical throughout", "", "{:.4f}", ".4f", "~g", 4, True,
           short="identical outputs"),
    Column("cost_per_1m_output_tokens_usd", "cost per 1M output tokens", "$", "{:,.4f}", ",.4f", "~g", 4, False,
           short="cost per 1M tokens"),
)
COLUMNS = COLUMNS + GENERATION_COLUMNS

BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
if len(BY_NAME) != len(COLUMNS):  # a figure named twice would be labelled two ways
    raise RuntimeError("optlab.study.columns: a column is declared twice in COLUMNS")
_INTERVALS: dict[str, tuple[Column, str]] = {
    name: (c, side) for c in COLUMNS if c.ci for name, side in zip(c.ci, ("low", "high"), strict=True)}


GENERATION_MARKERS = ("goodput_per_s", "output_tokens_per_s")


def unit_of_work(rows) -> str:
    """What one unit of throughput and of cost is in `rows` (dicts or a DataFrame): "requests"
    where they are generations (a request is many tokens; throughput there is goodput), else
    "predictions". Labels say "cost per 1M predictions" and swap the word through this."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    generation = any(not _lacking(r.get(n)) for r in records for n in GENERATION_MARKERS)
    return "requests" if generation else "predictions"


def column(name: str) -> Column | None:
    """The Column of `name`: its entry, an interval derived from its figure's entry (same unit and
    format, "95% CI low/high" in the label), or None for a column no view labels."""
    if name in BY_NAME:
        return BY_NAME[name]
    if name in _INTERVALS:
        parent, side = _INTERVALS[name]
        return replace(parent, name=name, label=f"{parent.label}, 95% CI {side}",
                       short=f"{parent.short or parent.label} CI {side}", ci=None, higher_is_better=None)
    return None


def title(name: str) -> str:
    """The axis title of a column (its name when it is not in the table)."""
    found = column(name)
    return found.title if found else name


def metric_higher_is_better(metric: str | None) -> bool:
    """Whether a larger value of `metric` is better (accuracy, auc, f1: yes; mae, rmse: no), as
    `optlab.instruments.metrics.DIRECTION` declares it (the one place). An unknown or missing
    metric counts as a score (higher is better), as quality always was."""
    return metrics.higher_is_better(metric)


def higher_is_better(name: str, metric: str | None = None) -> bool:
    """Direction of a figure: True when larger is better. Per-metric columns (quality) ask
    `metric_higher_is_better(metric)`; columns without a direction (and unknown ones) go down."""
    found = column(name)
    direction = None if found is None else found.higher_is_better
    if direction == PER_METRIC:
        return metric_higher_is_better(metric)
    return bool(direction)


def higher_is_better_names() -> tuple[str, ...]:
    """The columns where larger is always better, whatever the metric."""
    return tuple(c.name for c in COLUMNS if c.higher_is_better is True)
