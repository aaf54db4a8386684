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

from optlab.study.columns import higher_is_better_names

# objective -> (column, "min"|"max", words)
HIGHER_IS_BETTER = higher_is_better_names()  # columns ranked "max", from the one Column table
OBJECTIVES: dict[str, tuple[str, str, str]] = {
    "cost": ("cost_per_1m_usd", "min", "cost per 1M predictions"),
    "latency": ("p99_ms", "min", "p99 latency"),
    "size": ("size_bytes", "min", "size on disk"),
    "served": ("throughput_at_sla_per_s", "max", "throughput at the SLA when served (Study.serve)"),
}


def pareto_mask(df, x: str = "p99_ms", y: str = "quality", *, minimize_x: bool = True, maximize_y: bool = True,
                include_reference: bool = False):
    """Boolean Series (aligned with `df`): True where a row is Pareto-optimal.

    A row is dominated when another is at least as good on both axes and strictly better on
    one; rows tied exactly on both axes are all kept. Error rows, rows with a missing x or y
    and (unless `include_reference`) reference rows are False.
    """
    import pandas as pd

    for column in (x, y):
        if column not in df.columns:
            raise ValueError(f"column {column!r} is not in the results; available: {', '.join(map(str, df.columns))}")
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


def pareto_front(df, x: str = "p99_ms", y: str = "quality", *, minimize_x: bool = True, maximize_y: bool = True,
                 include_reference: bool = False):
    """The Pareto-optimal rows (minimise x, maximise y by default), sorted by x."""
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

    @property
    def candidate(self) -> str | None:
        return None if self.row is None else self.row.get("candidate")

    def rejected_frame(self):
        import pandas as pd

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
    if "quality" not in df.columns:
        return True
    values = df["quality"].dropna()
    values = values[values.map(lambda v: isinstance(v, (int, float, np.number)))] if len(values) else values
    return bool(len(values) == 0 or ((values >= 0) & (values <= 1)).all())


def _validate(df, objective, max_p99_ms, max_quality_drop, min_agreement) -> dict[str, float]:
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
    return constraints


def _float(row: dict, column: str) -> float:
    value = row.get(column)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def _drop(row: dict) -> float:
    drop = _float(row, "quality_drop")
    if math.isnan(drop) and row.get("family") == "baseline":
        return 0.0
    return drop


class _Formatter:
    def __init__(self, fraction: bool):
        self.fraction = fraction

    def drop(self, value: float) -> str:
        return f"{100 * value:.2f} pp" if self.fraction else f"{value:.4g}"

    @staticmethod
    def objective(objective: str, value: float) -> str:
        if objective == "cost":
            return f"${value:.4g}"
        if objective == "latency":
            return f"{value:.3g} ms"
        if objective == "size":
            return f"{value / 1e6:.3g} MB"
        return f"{value:.4g}"


def _violations(row: dict, constraints: dict[str, float], fmt: _Formatter) -> tuple[list[str], float]:
    """Reasons a row breaks the constraints and a scale-free distance to meeting them."""
    reasons, distance = [], 0.0
    if "max_p99_ms" in constraints:
        limit, p99 = constraints["max_p99_ms"], _float(row, "p99_ms")
        if math.isnan(p99):
            reasons.append("p99 latency not measured")
            distance += 1e6
        elif p99 > limit:
            reasons.append(f"p99 {p99:.3g} ms > {limit:g} ms")
            distance += p99 / limit - 1
    if "max_quality_drop" in constraints:
        limit, drop = constraints["max_quality_drop"], _drop(row)
        if math.isnan(drop):
            reasons.append("quality not evaluated")
            distance += 1e6
        elif drop > limit:
            reasons.append(f"quality drop {fmt.drop(drop)} > {fmt.drop(limit)}")
            distance += (drop - limit) / max(limit, 0.005)
    if "min_agreement" in constraints:
        limit, agreement = constraints["min_agreement"], _float(row, "agreement")
        if math.isnan(agreement):
            reasons.append("agreement not evaluated")
            distance += 1e6
        elif agreement < limit:
            reasons.append(f"agreement {agreement:.3f} < {limit:g}")
            distance += (limit - agreement) / max(limit, 1e-3)
    return reasons, distance


def _describe_constraints(constraints: dict[str, float], fmt: _Formatter) -> str:
    words = {"max_p99_ms": lambda v: f"p99 <= {v:g} ms", "max_quality_drop": lambda v: f"quality drop <= {fmt.drop(v)}",
             "min_agreement": lambda v: f"agreement >= {v:g}"}
    return " and ".join(words[k](v) for k, v in constraints.items()) or "no constraints"


def _best_on(rows: list[dict], constraint: str, fmt: _Formatter) -> str:
    if constraint == "max_p99_ms":
        values = [(r, _float(r, "p99_ms")) for r in rows if not math.isnan(_float(r, "p99_ms"))]
        if values:
            row, v = min(values, key=lambda t: t[1])
            return f"the fastest is {row.get('candidate')} at {v:.3g} ms"
    elif constraint == "max_quality_drop":
        values = [(r, _drop(r)) for r in rows if not math.isnan(_drop(r))]
        if values:
            row, v = min(values, key=lambda t: t[1])
            return f"the smallest drop is {row.get('candidate')} at {fmt.drop(v)}"
    elif constraint == "min_agreement":
        values = [(r, _float(r, "agreement")) for r in rows if not math.isnan(_float(r, "agreement"))]
        if values:
            row, v = max(values, key=lambda t: t[1])
            return f"the closest agreement is {row.get('candidate')} at {v:.3f}"
    return "none was measured on it"


def recommend(df, *, max_p99_ms: float | None = None, max_quality_drop: float | None = None,
              objective: str = "cost", min_agreement: float | None = None,
              include_reference: bool = False) -> Recommendation:
    """The candidate with the best `objective` ("cost" | "latency" | "size") among those with
    p99_ms <= max_p99_ms, quality_drop <= max_quality_drop (a fraction: 0.01 = 1 percentage
    point) and agreement >= min_agreement. The baseline competes too. Ties go to the smaller
    quality drop, then the lower p99. Without cost columns, "cost" ranks by throughput, which
    orders cost the same at one price per hour.
    """
    constraints = _validate(df, objective, max_p99_ms, max_quality_drop, min_agreement)
    if df is None or len(df) == 0:
        raise ValueError("the study has no results yet: run() it (or load rows) before asking for a recommendation")
    fmt = _Formatter(_quality_is_fraction(df))
    column, direction, words = OBJECTIVES[objective]
    records = df.to_dict("records")
    errors = [r for r in records if r.get("status") == "error"]
    allowed = ("ok", "reference") if include_reference else ("ok",)
    rows = [r for r in records if r.get("status", "ok") in allowed]
    if not rows:
        raise ValueError(f"no successful candidate to recommend among {len(records)} rows "
                         f"({len(errors)} errors); fix the failing recipes or run() the study")
    if objective == "cost" and all(math.isnan(_float(r, column)) for r in rows):
        column, direction, words = "throughput_per_s", "max", "throughput (no price given: it orders cost the same)"

    def score(row: dict) -> float:
        value = _float(row, column)
        if math.isnan(value):
            return math.inf
        return value if direction == "min" else -value

    rejected: list[Rejection] = [Rejection(str(r.get("candidate")), (f"failed: {r.get('error') or 'error'}",))
                                 for r in errors]
    passing, failing = [], []
    for row in rows:
        reasons, distance = _violations(row, constraints, fmt)
        if math.isinf(score(row)):
            reasons.append(f"no {words} measured")
            distance += 1e6
        (failing if reasons else passing).append((row, reasons, distance))
    described = _describe_constraints(constraints, fmt)

    if passing:
        passing.sort(key=lambda t: (score(t[0]), _drop(t[0]), _float(t[0], "p99_ms"), str(t[0].get("candidate"))))
        best = passing[0][0]
        for row, _, _ in passing[1:]:
            rejected.append(Rejection(str(row.get("candidate")), (
                f"meets the constraints but its {words} is {_fmt_objective(column, objective, _float(row, column))} "
                f"vs {_fmt_objective(column, objective, _float(best, column))}",), True))
        rejected += [Rejection(str(r.get("candidate")), tuple(reasons)) for r, reasons, _ in failing]
        explanation = _explain_choice(best, rows, column, objective, words, described, len(passing), fmt)
        return Recommendation(True, best, explanation, objective, constraints, rejected)

    rejected += [Rejection(str(r.get("candidate")), tuple(reasons)) for r, reasons, _ in failing]
    unmet = tuple(k for k in constraints
                  if all(_violations(r, {k: constraints[k]}, fmt)[0] for r in rows))
    closest = min(failing, key=lambda t: (t[2], score(t[0])))[0]
    if unmet:
        parts = [f"nothing meets {_describe_constraints({k: constraints[k]}, fmt)} "
                 f"({_best_on(rows, k, fmt)})" for k in unmet]
        head = "No candidate meets the constraints: " + "; ".join(parts) + "."
    else:
        head = f"Each constraint is met by some candidate, but none meets all of {described}."
    reasons = next(reasons for r, reasons, _ in failing if r is closest)
    explanation = f"{head} Closest: {closest.get('candidate')} ({'; '.join(reasons)})."
    return Recommendation(False, None, explanation, objective, constraints, rejected, closest, unmet)


def _fmt_objective(column: str, objective: str, value: float) -> str:
    if column in HIGHER_IS_BETTER:
        return f"{value:.4g}/s"
    return _Formatter.objective(objective, value)


def _explain_choice(best: dict, rows: list[dict], column: str, objective: str, words: str, described: str,
                    n_passing: int, fmt: _Formatter) -> str:
    name = best.get("candidate")
    text = (f"{name}: the best {words} ({_fmt_objective(column, objective, _float(best, column))}) among "
            f"{n_passing} of {len(rows)} candidates meeting {described}")
    baseline = next((r for r in rows if r.get("family") == "baseline"), None)
    if baseline is not None and baseline is not best:
        ours, theirs = _float(best, column), _float(baseline, column)
        if theirs > 0 and ours > 0 and not (math.isnan(ours) or math.isnan(theirs)):
            ratio = ours / theirs if column in HIGHER_IS_BETTER else theirs / ours
            text += f"; {ratio:.2f}x better than the baseline ({_fmt_objective(column, objective, theirs)})"
    details = []
    p99 = _float(best, "p99_ms")
    if not math.isnan(p99):
        details.append(f"p99 {p99:.3g} ms")
    drop = _drop(best)
    if not math.isnan(drop):
        low, high = _float(best, "quality_drop_ci_low"), _float(best, "quality_drop_ci_high")
        interval = "" if math.isnan(low) or math.isnan(high) else f" (95% CI {fmt.drop(low)} to {fmt.drop(high)})"
        details.append(f"quality drop {fmt.drop(drop)}{interval}")
    if details:
        text += "; " + ", ".join(details)
    return text + "."
