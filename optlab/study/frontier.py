"""The trade-off on a results DataFrame: the Pareto front and an SLA recommendation.

Pure functions of the study's tidy DataFrame (one row per candidate), so plots, widgets and
reports use them without a Study. Error rows are never on a front nor recommended;
reference rows (measured on another machine) are left out unless asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optlab.instruments.metrics import higher_is_better as metric_higher_is_better
from optlab.study import machines as machines_module
from optlab.study.columns import column as column_entry
from optlab.study.columns import higher_is_better, unit_of_work
from optlab.study.explanation import (
    HIGHER_IS_BETTER,
    Choice,
    Formatter,
    Ratio,
    SideBySide,
    best_on,
    choice_too_close,
    drop,
    explain_choice,
    figure,
    noise,
    noisy_names,
)

__all__ = ["HIGHER_IS_BETTER", "OBJECTIVES", "Constraint", "Recommendation", "Rejection", "SideBySide",
           "meeting", "pareto_front", "pareto_mask", "recommend", "sla_constraints", "sla_status", "vega_outside"]

# objective -> (column, "min"|"max", words)
OBJECTIVES: dict[str, tuple[str, str, str]] = {
    "cost": ("cost_per_1m_usd", "min", "cost per 1M predictions"),
    "latency": ("p99_ms", "min", "p99 latency"),
    "size": ("size_bytes", "min", "size on disk"),
    "served": ("throughput_at_sla_per_s", "max", "throughput at the SLA when served (Study.serve)"),
}
SHORT = {"cost": "cost", "latency": "p99 latency", "size": "size", "served": "served throughput"}


def rows_metric(df) -> str | None:
    """The rows' one quality metric (None when absent or mixed): it sets which way quality is better."""
    if "metric" not in df.columns:
        return None
    found = {str(m) for m in df["metric"].dropna()}
    return found.pop() if len(found) == 1 else None


def _maximize(df, y: str, maximize_y: bool | None) -> bool:
    """`maximize_y` as given, else from the Column table: quality goes the way the rows' metric
    does (accuracy up, mae and rmse down); a column the table does not know is maximised."""
    if maximize_y is not None:
        return maximize_y
    return True if column_entry(y) is None else higher_is_better(y, rows_metric(df))


def pareto_mask(df, x: str = "p99_ms", y: str = "quality", *, minimize_x: bool = True,
                maximize_y: bool | None = None, include_reference: bool = False):
    """Boolean Series (aligned with `df`): True where a row is Pareto-optimal.

    A row is dominated when another is at least as good on both axes and strictly better on
    one; rows tied exactly on both axes are all kept. Error rows, rows with a missing x or y
    and (unless `include_reference`) reference rows are False. `maximize_y=None` takes y's
    direction from the Column table (quality: the rows' metric's direction).
    """
    import pandas as pd  # on use: the CLI imports this module at start, and pandas takes a while

    for column in (x, y):
        if column not in df.columns:
            raise ValueError(f"column {column!r} is not in the results; available: {', '.join(map(str, df.columns))}")
    maximize_y = _maximize(df, y, maximize_y)
    usable = df["status"].isin(["ok", "reference"] if include_reference else ["ok"]).to_numpy() \
        if "status" in df.columns else np.ones(len(df), dtype=bool)
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    a = xs if minimize_x else -xs
    b = -ys if maximize_y else ys
    candidates = np.flatnonzero(usable & ~np.isnan(a) & ~np.isnan(b))
    keep = np.zeros(len(df), dtype=bool)
    best_b, last = math.inf, None
    for i in sorted(candidates, key=lambda i: (a[i], b[i])):  # positions: duplicate index labels are fine
        if b[i] < best_b or (a[i], b[i]) == last:
            keep[i] = True
            best_b, last = min(best_b, b[i]), (a[i], b[i])
    return pd.Series(keep, index=df.index)


def pareto_front(df, x: str = "p99_ms", y: str = "quality", *, minimize_x: bool = True,
                 maximize_y: bool | None = None, include_reference: bool = False):
    """The Pareto-optimal rows (minimise x; y the way it is better: quality up for accuracy, down
    for mae or rmse), sorted by x."""
    mask = pareto_mask(df, x, y, minimize_x=minimize_x, maximize_y=maximize_y, include_reference=include_reference)
    return df[mask].sort_values(x, ascending=minimize_x, kind="stable")


# --- recommendation ------------------------------------------------------------------

@dataclass(frozen=True)
class Rejection:
    """Why a candidate was not recommended."""

    candidate: str
    reasons: tuple[str, ...]
    meets_constraints: bool = False


@dataclass
class Recommendation:
    """The best candidate under the constraints (`row`), or, when none meets them, `row=None`,
    the constraints nothing meets (`unmet`) and the `closest` candidate."""

    met: bool
    row: dict[str, Any] | None
    explanation: str
    objective: str
    constraints: dict[str, float]
    rejected: list[Rejection] = field(default_factory=list)
    closest: dict[str, Any] | None = None
    unmet: tuple[str, ...] = ()
    not_measured: tuple[str, ...] = ()  # meet the constraints but lack the objective's figure
    too_close: tuple[str, ...] = ()  # the winner and the runner-up, when re-timing could not tell them apart
    side_by_side: SideBySide | None = None  # the interleaved re-timing the explanation quotes, if any
    runner_up: dict[str, Any] | None = None
    noisy: tuple[str, ...] = ()  # candidates in the explanation whose timing was flagged noisy
    machines: tuple[str, ...] = ()  # the machines whose rows were compared (optlab.study.machines labels)

    @property
    def candidate(self) -> str | None:
        return None if self.row is None else self.row.get("candidate")

    def rejected_frame(self):
        import pandas as pd  # on use, as in pareto_mask

        return pd.DataFrame([{"candidate": r.candidate, "meets_constraints": r.meets_constraints,
                              "reasons": "; ".join(r.reasons)} for r in self.rejected],
                            columns=["candidate", "meets_constraints", "reasons"])

    def __str__(self) -> str:
        return self.explanation

    def _repr_markdown_(self) -> str:
        lines = [f"**{self.explanation}**", ""]
        lines += [f"- {r.candidate}: {'; '.join(r.reasons)}" for r in self.rejected]
        return "\n".join(lines)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or math.isnan(value):
        raise ValueError(f"{name}={value!r} must be a number")
    return float(value)


def _quality_is_fraction(df) -> bool:
    """Quality in [0, 1] for a metric where higher is better (accuracy, agreement): drops read in
    percentage points; a lower-is-better metric (mae, rmse, logloss) is in its own units."""
    if "quality" not in df.columns:
        return True
    metric = rows_metric(df)
    if metric is not None and not metric_higher_is_better(metric):
        return False
    values = df["quality"].dropna()
    values = values[values.map(lambda v: isinstance(v, (int, float, np.number)))] if len(values) else values
    return bool(len(values) == 0 or ((values >= 0) & (values <= 1)).all())


def _budget(name: str, value: Any, unit_words: str) -> float:
    """A memory or size budget: a positive, finite number of megabytes."""
    number = _number(name, value)
    if number <= 0 or math.isinf(number):
        raise ValueError(f"{name}={value!r} must be a positive budget in megabytes ({unit_words}, e.g. 512), "
                         f"or None for no such budget")
    return number


def _validate(df, objective, max_p99_ms, max_quality_drop, min_agreement, max_memory_mb=None,
              max_size_mb=None) -> dict[str, float]:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of: {', '.join(map(repr, OBJECTIVES))}")
    constraints: dict[str, float] = {}
    if max_p99_ms is not None:
        value = _number("max_p99_ms", max_p99_ms)
        if value <= 0 or math.isinf(value):
            raise ValueError(f"max_p99_ms={max_p99_ms!r} must be a positive latency in milliseconds "
                             f"(e.g. 20 for 20 ms; 0.5 s is 500), or None for no latency limit")
        constraints["max_p99_ms"] = value
    if max_quality_drop is not None:
        value = _number("max_quality_drop", max_quality_drop)
        if value < 0:
            raise ValueError(f"max_quality_drop={max_quality_drop!r} must be >= 0: it is the largest allowed "
                             f"drop (baseline - candidate, positive = worse); use 0.01 for 1 percentage point")
        if value >= 1 and _quality_is_fraction(df):
            raise ValueError(f"max_quality_drop={max_quality_drop!r} is too large: quality is a fraction "
                             f"(accuracy/AUC in [0, 1]), so use 0.01 for 1 percentage point "
                             f"(or None for no quality limit)")
        constraints["max_quality_drop"] = value
    if min_agreement is not None:
        value = _number("min_agreement", min_agreement)
        if not 0 <= value <= 1:
            raise ValueError(f"min_agreement={min_agreement!r} must be a fraction in [0, 1] "
                             f"(0.99 = the candidate agrees with the baseline on 99% of predictions)")
        constraints["min_agreement"] = value
    if max_memory_mb is not None:
        constraints["max_memory_mb"] = _budget("max_memory_mb", max_memory_mb, "peak resident memory of a fresh "
                                                                            "process serving the candidate")
    if max_size_mb is not None:
        constraints["max_size_mb"] = _budget("max_size_mb", max_size_mb, "the artifact's size on disk")
    return constraints


# --- SLA membership: one owner ----------------------------------------------------------

MEETS, FAILS, NOT_MEASURED = "meets", "fails", "not measured"


@dataclass(frozen=True)
class _Limit:
    column: str
    upper: bool  # True: the figure must be <= the limit; False: >= it
    words: str


_LIMITS = {
    "max_p99_ms": _Limit("p99_ms", True, "p99 latency"),
    "max_quality_drop": _Limit("quality_drop", True, "quality"),
    "min_agreement": _Limit("agreement", False, "agreement"),
    # budgets: the peak memory of a fresh process that loads and serves the candidate (cold start's
    # measurement) and the artifact's size on disk, both as every measured row carries them
    "max_memory_mb": _Limit("peak_rss_mb", True, "peak memory"),
    "max_size_mb": _Limit("size_mb", True, "size on disk"),
}
SERVED_COLUMNS = ("throughput_at_sla_per_s", "serving_max_p99_ms")  # what Study.serve found under load


@dataclass(frozen=True)
class Constraint:
    """One SLA limit or budget (`name` is its keyword and the charts' Vega param: max_p99_ms,
    max_quality_drop, min_agreement, max_memory_mb or max_size_mb). It judges a results row
    (`judge`) and renders the same rule as a Vega expression (`vega_outside`), so a sentence and a
    chart cannot disagree.

    The rules: a missing figure does not meet a limit (it is "not measured", never assumed); the
    baseline's quality drop is 0; a candidate that `Study.serve` found serving 0/s within a p99
    limit at least as loose as this one does not meet it, whatever its loop p99 says."""

    name: str
    limit: float
    fraction: bool = True  # quality is a fraction: drops read in percentage points

    def __post_init__(self):
        if self.name not in _LIMITS:
            raise ValueError(f"unknown constraint {self.name!r}; choose one of: {', '.join(_LIMITS)}")

    @property
    def column(self) -> str:
        return _LIMITS[self.name].column

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the rule reads (a chart must carry them all)."""
        extra = SERVED_COLUMNS if self.name == "max_p99_ms" else ("family",) if self.column == "quality_drop" else ()
        return (self.column, *extra)

    def value(self, row: dict) -> float:
        return drop(row) if self.column == "quality_drop" else figure(row, self.column)

    def describe(self) -> str:
        if self.name == "max_p99_ms":
            return f"p99 <= {self.limit:g} ms"
        if self.name == "max_quality_drop":
            return f"quality drop <= {Formatter(self.fraction).drop(self.limit)}"
        if self.name in ("max_memory_mb", "max_size_mb"):
            return f"{_LIMITS[self.name].words} <= {self.limit:g} MB"
        return f"agreement >= {self.limit:g}"

    def judge(self, row: dict) -> tuple[str, str, float]:
        """(MEETS | FAILS | NOT_MEASURED, the reason, a scale-free distance to meeting it)."""
        value, limit = self.value(row), self.limit
        if math.isnan(value):
            what = {"p99_ms": "p99 latency not measured", "quality_drop": "quality not evaluated",
                    "peak_rss_mb": "peak memory not measured (no fresh-process cold start)",
                    "size_mb": "size on disk not measured (no artifact)"}
            return NOT_MEASURED, what.get(self.column, f"{self.column.replace('_', ' ')} not evaluated"), 1e6
        served, searched = figure(row, SERVED_COLUMNS[0]), figure(row, SERVED_COLUMNS[1])
        if self.name == "max_p99_ms" and served <= 0 and searched >= limit:
            return FAILS, f"serves 0/s within p99 <= {searched:g} ms under load (Study.serve)", 1.0
        if self.name == "max_p99_ms" and value > limit:
            return FAILS, f"p99 {value:.3g} ms > {limit:g} ms", value / limit - 1
        if self.name == "max_quality_drop" and value > limit:
            fmt = Formatter(self.fraction)
            return FAILS, f"quality drop {fmt.drop(value)} > {fmt.drop(limit)}", (value - limit) / max(limit, 0.005)
        if self.name == "min_agreement" and value < limit:
            return FAILS, f"agreement {value:.3f} < {limit:g}", (limit - value) / max(limit, 1e-3)
        if self.name in ("max_memory_mb", "max_size_mb") and value > limit:
            return FAILS, f"{_LIMITS[self.name].words} {value:.4g} MB > {limit:g} MB", value / limit - 1
        return MEETS, "", 0.0

    def vega_outside(self, param: bool = True) -> str:
        """A Vega expression, true where a datum does not meet this limit (the same rule as
        `judge`); the limit is the chart param named `name` (`param=False`: the number itself)."""
        limit = self.name if param else repr(float(self.limit))
        field = f"datum.{self.column}"
        if self.column == "quality_drop":
            missing = f"(datum.family != 'baseline' && !isValid({field}))"
        else:
            missing = f"!isValid({field})"
        op = ">" if _LIMITS[self.name].upper else "<"
        rule = f"{missing} || {field} {op} {limit}"
        if self.name == "max_p99_ms":
            served, searched = (f"datum.{c}" for c in SERVED_COLUMNS)
            rule += f" || (isValid({served}) && {served} <= 0 && {searched} >= {limit})"
        return rule


def sla_constraints(*, max_p99_ms: float | None = None, max_quality_drop: float | None = None,
                    min_agreement: float | None = None, max_memory_mb: float | None = None,
                    max_size_mb: float | None = None, fraction: bool = True) -> tuple[Constraint, ...]:
    """The Constraints for the limits given (None = no such limit)."""
    given = {"max_p99_ms": max_p99_ms, "max_quality_drop": max_quality_drop, "min_agreement": min_agreement,
             "max_memory_mb": max_memory_mb, "max_size_mb": max_size_mb}
    return tuple(Constraint(name, float(limit), fraction) for name, limit in given.items() if limit is not None)


def vega_outside(constraints: tuple[Constraint, ...], columns=None, *, param: bool = True) -> str | None:
    """One Vega expression, true where a datum breaks any of `constraints` (those whose column is
    in `columns`, when given); None when there is nothing to test."""
    parts = [f"({c.vega_outside(param)})" for c in constraints if columns is None or c.column in columns]
    return " || ".join(parts) or None


def sla_status(row: dict, constraints: tuple[Constraint, ...]) -> str:
    """MEETS when every constraint is met, else FAILS (any failure) or NOT_MEASURED."""
    states = {c.judge(row)[0] for c in constraints}
    return FAILS if FAILS in states else NOT_MEASURED if NOT_MEASURED in states else MEETS


def meeting(df, constraints: tuple[Constraint, ...], *, include_reference: bool = True) -> set[str]:
    """Names of the successful (and, by default, reference) rows that meet every constraint."""
    allowed = ("ok", "reference") if include_reference else ("ok",)
    return {str(r.get("candidate")) for r in df.to_dict("records")
            if (r.get("status") or "ok") in allowed and sla_status(r, constraints) == MEETS}


def _violations(row: dict, constraints: tuple[Constraint, ...]) -> tuple[list[str], float]:
    """Reasons a row breaks (or cannot be shown to meet) the constraints, and its distance to them."""
    judged = [c.judge(row) for c in constraints]
    return [reason for state, reason, _ in judged if state != MEETS], sum(d for state, _, d in judged if state != MEETS)


def _describe_constraints(constraints: tuple[Constraint, ...]) -> str:
    return " and ".join(c.describe() for c in constraints) or "no constraints"


# --- recommendation ---------------------------------------------------------------------

def _objective(objective: str, rows: list[dict]) -> tuple[str, str, str, str]:
    """(column, "min"|"max", words, short words) that rank the rows for `objective`."""
    column, direction, words = OBJECTIVES[objective]
    if objective == "cost" and all(math.isnan(figure(r, column)) for r in rows):
        return "throughput_per_s", "max", "throughput (no price given: it orders cost the same)", "throughput"
    return column, direction, words.replace("predictions", unit_of_work(rows)), SHORT[objective]


def recommend(df, *, max_p99_ms: float | None = None, max_quality_drop: float | None = None,
              objective: str = "cost", min_agreement: float | None = None, max_memory_mb: float | None = None,
              max_size_mb: float | None = None, include_reference: bool = False,
              side_by_side: SideBySide | None = None, machine: str | None = None,
              across_machines: bool = False) -> Recommendation:
    """The candidate with the best `objective` ("cost" | "latency" | "size" | "served") among those
    with p99_ms <= max_p99_ms, quality_drop <= max_quality_drop (a fraction: 0.01 = 1 percentage
    point), agreement >= min_agreement, peak_rss_mb <= max_memory_mb and size_mb <= max_size_mb (the
    `Constraint` rules; a budget's figure not measured does not meet it). The baseline competes too. Ties
    go to the smaller quality drop, then the lower p99. Without cost columns, "cost" ranks by
    throughput, which orders cost the same at one price per hour. A candidate that meets the
    constraints but lacks the objective's figure is "not measured", not failing.

    `side_by_side` (from `optlab.study.contenders`): the contenders re-timed interleaved on this
    machine; the explanation then quotes those ratios and their intervals, and says "too close to
    call" where an interval includes 1. Without it, ratios say they come from separate measurements.

    One machine at a time: a p99 timed on a fast node is not comparable with one timed on a slow
    node, so when the successful rows were measured on more than one machine (`optlab.study.machines`:
    host, CPU model and flags, cores) this refuses, naming the machines, unless `machine=` picks
    one machine's rows (a label `machines.machines(df)` lists) or `across_machines=True` compares them
    anyway, which the explanation then says. Reference rows are opt-in (`include_reference`) and kept.
    """
    df, compared = _one_machine(df, machine, across_machines)
    rec = _recommend(df, max_p99_ms=max_p99_ms, max_quality_drop=max_quality_drop, objective=objective,
                     min_agreement=min_agreement, max_memory_mb=max_memory_mb, max_size_mb=max_size_mb,
                     include_reference=include_reference, side_by_side=side_by_side)
    rec.machines = tuple(compared)
    if len(compared) > 1:
        rec.explanation += (f" (Compared across {len(compared)} machines, as asked: "
                            f"{machines_module.describe(compared)}; a difference in timing may be the "
                            f"machines', not the candidates'.)")
    return rec


def _one_machine(df, machine: str | None, across_machines: bool) -> tuple[Any, dict[str, int]]:
    """(the rows to rank, {machine: successful rows} they come from): one machine's rows for
    `machine=`, all rows when there is one machine or `across_machines`, else ValueError naming the
    machines and the fix."""
    if not isinstance(across_machines, bool):
        raise ValueError(f"across_machines={across_machines!r} must be True or False")
    if machine is not None and across_machines:
        raise ValueError(f"machine={machine!r} picks one machine's rows and across_machines=True compares them "
                         f"all: give one of the two")
    if df is None or len(df) == 0:
        return df, {}
    labels = machines_module.machine_column(df)
    status = df["status"].fillna("ok") if "status" in df.columns else None
    ok = labels if status is None else labels[status == "ok"]
    found = machines_module.machines(df)
    counts = {label: int((ok == label).sum()) for label in dict.fromkeys(ok) if label is not None}
    if machine is not None:
        if machine not in found:
            known = ", ".join(map(repr, found)) or "none (the rows carry no cpu_model)"
            raise ValueError(f"machine={machine!r} measured none of these rows; pass one of the machines here: {known}")
        keep = (labels == machine) | (status == "reference" if status is not None else False)
        return df[keep.to_numpy()], {machine: counts.get(machine, 0)}
    if len(counts) > 1 and not across_machines:
        raise ValueError(f"these results were measured on {len(counts)} machines, "
                         f"{machines_module.describe(counts)}, and a timing on one is not comparable with "
                         f"another's: pass machine={next(iter(counts))!r} (or another of them) to recommend among "
                         f"one machine's rows, or across_machines=True to compare them anyway")
    return df, counts


def _recommend(df, *, max_p99_ms, max_quality_drop, objective, min_agreement, max_memory_mb, max_size_mb,
               include_reference, side_by_side) -> Recommendation:
    limits = _validate(df, objective, max_p99_ms, max_quality_drop, min_agreement, max_memory_mb, max_size_mb)
    if df is None or len(df) == 0:
        raise ValueError("the study has no results yet: run() it (or load rows) before asking for a recommendation")
    fraction, metric = _quality_is_fraction(df), rows_metric(df)
    fmt = Formatter(fraction, units="" if fraction or metric is None else f"in {metric}")
    constraints = sla_constraints(**limits, fraction=fmt.fraction)
    records = df.to_dict("records")
    errors = [r for r in records if r.get("status") == "error"]
    allowed = ("ok", "reference") if include_reference else ("ok",)
    rows = [r for r in records if (r.get("status") or "ok") in allowed]
    if not rows:
        raise ValueError(f"no successful candidate to recommend among {len(records)} rows "
                         f"({len(errors)} errors); fix the failing recipes or run() the study")
    column, direction, words, short = _objective(objective, rows)

    def score(row: dict) -> float:
        value = figure(row, column)
        return math.inf if math.isnan(value) else value if direction == "min" else -value

    passing, unranked, failing = [], [], []
    for row in rows:
        reasons, distance = _violations(row, constraints)
        if reasons:
            failing.append((row, reasons, distance))
        else:
            (unranked if math.isinf(score(row)) else passing).append(row)
    rejected = [Rejection(str(r.get("candidate")), (f"failed: {r.get('error') or 'error'}",)) for r in errors]
    if not passing:
        failing += [(r, [f"no {words} measured"], 1e6) for r in unranked]
        return _miss(rows, failing, rejected, constraints, objective, fmt, score)
    passing.sort(key=lambda r: (score(r), drop(r), figure(r, "p99_ms"), str(r.get("candidate"))))
    overtaken = _overtaken(passing, side_by_side)
    if overtaken is not None:  # side by side, another ran clearly faster: the separate timings misled
        ahead = next(r for r in passing if str(r.get("candidate")) == overtaken.faster)
        passing.remove(ahead)
        passing.insert(0, ahead)
    best = passing[0]
    for row in passing[1:]:
        rejected.append(Rejection(str(row.get("candidate")), (
            f"meets the constraints but its {words} is {Formatter.objective(column, objective, figure(row, column))} "
            f"vs {Formatter.objective(column, objective, figure(best, column))}",), True))
    rejected += [Rejection(str(r.get("candidate")), (f"meets the constraints; its {short} was not measured",), True)
                 for r in unranked]
    rejected += [Rejection(str(r.get("candidate")), tuple(reasons)) for r, reasons, _ in failing]
    choice = Choice(best, passing[1] if len(passing) > 1 else None, rows, column, objective, words, short,
                    overtaken)
    explanation = explain_choice(choice, _describe_constraints(constraints), len(passing), len(unranked), fmt,
                                  side_by_side)
    too_close = choice_too_close(choice, side_by_side)
    return Recommendation(True, best, explanation, objective, limits, rejected,
                          not_measured=tuple(str(r.get("candidate")) for r in unranked), too_close=too_close,
                          side_by_side=side_by_side, runner_up=choice.runner_up,
                          noisy=tuple(noisy_names([best, choice.baseline, choice.runner_up])))


def _overtaken(passing: list[dict], side_by_side: SideBySide | None) -> Ratio | None:
    """The side-by-side ratio over the first-ranked of the contender that ran clearly faster than it
    (the fastest such), or None."""
    if side_by_side is None or len(passing) < 2:
        return None
    first = str(passing[0].get("candidate"))
    ratios = [side_by_side.ratio(str(r.get("candidate")), first) for r in passing[1:]]
    ahead = [r for r in ratios if r is not None and r.estimate > 1 and not r.too_close]
    return max(ahead, key=lambda r: r.estimate, default=None)


def _miss(rows, failing, rejected, constraints, objective, fmt, score) -> Recommendation:
    """No candidate meets every constraint: which constraints nothing meets, and the closest."""
    rejected = rejected + [Rejection(str(r.get("candidate")), tuple(reasons)) for r, reasons, _ in failing]
    unmet = tuple(c for c in constraints if all(c.judge(r)[0] != MEETS for r in rows))
    closest = min(failing, key=lambda t: (t[2], score(t[0])))[0]
    if unmet:
        parts = [f"nothing meets {c.describe()} ({best_on(rows, c, fmt)})" for c in unmet]
        head = "No candidate meets the constraints: " + "; ".join(parts) + "."
    else:
        head = f"Each constraint is met by some candidate, but none meets all of {_describe_constraints(constraints)}."
    reasons = next(reasons for r, reasons, _ in failing if r is closest)
    explanation = f"{head} Closest: {closest.get('candidate')} ({'; '.join(reasons)})."
    sentence = noise([closest])
    if sentence:
        explanation += " " + sentence
    limits = {c.name: c.limit for c in constraints}
    return Recommendation(False, None, explanation, objective, limits, rejected, closest,
                          tuple(c.name for c in unmet), noisy=tuple(noisy_names([closest])))
