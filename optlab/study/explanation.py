"""The words of a recommendation: how a chosen candidate compares, and how far to trust it.

`optlab.study.frontier.recommend` decides; this module says it. Three rules shape the words,
because a person acts on them:

- Like with like: a ratio against the baseline compares the same batch size
  (`optlab.study.costs.compare`), or says the comparison is not available and why.
- Side by side beats separate: where the contenders were re-timed interleaved on this machine
  (`SideBySide`, from `optlab.study.contenders`), the ratio is theirs, with its 95% interval,
  and an interval that includes 1 reads "too close to call on this machine", naming both.
  Otherwise the ratio says it comes from separate measurements.
- Noise is said: a figure measured while other processes used the CPU is named with their
  share and the advice to re-run on a quiet machine before deciding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optlab.study import costs
from optlab.study.columns import higher_is_better_names

HIGHER_IS_BETTER = higher_is_better_names()  # columns ranked "max", from the one Column table
INDIFFERENCE = 1.03  # speed ratios within 3% of 1 are too close to call side by side


def figure(row: dict, column: str) -> float:
    """A row's number in `column` as a float; NaN when missing or not a number."""
    try:
        return float(row.get(column))
    except (TypeError, ValueError):
        return math.nan


def drop(row: dict) -> float:
    """The quality drop; the baseline's own is 0 when its row leaves it empty."""
    value = figure(row, "quality_drop")
    if math.isnan(value) and row.get("family") == "baseline":
        return 0.0
    return value


def _unsigned_zero(text: str) -> str:
    """A formatted number that rounds to zero, without a minus sign ("-0.00" reads as a loss)."""
    return text.lstrip("-") if float(text) == 0 else text


class Formatter:
    """Numbers as a person reads them: drops in percentage points when quality is a fraction,
    else in the metric's own units (`units`, e.g. "in mae"); a drop that rounds to zero reads
    "0", never "-0"."""

    def __init__(self, fraction: bool, units: str = ""):
        self.fraction = fraction
        self.units = units

    def drop(self, value: float, *, units: bool = True) -> str:
        if self.fraction:
            return f"{_unsigned_zero(f'{100 * value:.2f}')} pp"
        text = _unsigned_zero(f"{value:.4g}")
        return f"{text} {self.units}" if units and self.units else text

    @staticmethod
    def objective(column: str, objective: str, value: float) -> str:
        if column in HIGHER_IS_BETTER:
            return f"{value:.4g}/s"
        if objective == "cost":
            return f"${value:.4g}"
        if objective == "latency":
            return f"{value:.3g} ms"
        if objective == "size":
            return f"{value / 1e6:.3g} MB"
        return f"{value:.4g}"


# --- side by side ----------------------------------------------------------------------

@dataclass(frozen=True)
class Ratio:
    """How many times faster `faster` ran than `slower` when timed interleaved (the estimate and
    its 95% interval; below 1 means slower)."""

    faster: str
    slower: str
    estimate: float
    low: float
    high: float

    @property
    def too_close(self) -> bool:
        """The interval includes 1, or reaches within `INDIFFERENCE` of it: a shared machine's
        interleaved rounds do not separate differences that small."""
        return self.low <= INDIFFERENCE and self.high >= 1.0 / INDIFFERENCE

    def flipped(self) -> "Ratio":
        return Ratio(self.slower, self.faster, 1 / self.estimate, 1 / self.high, 1 / self.low)

    def interval(self) -> str:
        return f"{self.estimate:.2f}x, 95% CI {self.low:.2f}-{self.high:.2f}x"

    def close_interval(self) -> str:
        """`interval()`, and why it is too close when it excludes 1 (it ends within `INDIFFERENCE`):
        "1.31x, 95% CI 1.03-1.82x" alone read as a clear winner called a tie."""
        if self.low <= 1.0 <= self.high:
            return self.interval()
        return f"{self.interval()}: its end is within {INDIFFERENCE - 1:.0%} of even"


@dataclass(frozen=True)
class SideBySide:
    """Contenders re-timed interleaved (A B C A B C ...) on this machine: pairwise speed ratios."""

    batch_size: int | None
    rounds: int
    ratios: tuple[Ratio, ...]
    busy_other_cpu_share: float | None = None

    def ratio(self, faster: str, slower: str) -> Ratio | None:
        for ratio in self.ratios:
            if (ratio.faster, ratio.slower) == (faster, slower):
                return ratio
            if (ratio.faster, ratio.slower) == (slower, faster):
                return ratio.flipped()
        return None

    def how(self) -> str:
        where = f" at batch {self.batch_size}" if self.batch_size else ""
        return f"re-timed side by side{where}, {self.rounds} interleaved rounds"


# --- sentences -------------------------------------------------------------------------

def best_on(rows: list[dict], constraint: Any, fmt: Formatter) -> str:
    """Who comes closest on one constraint (an `optlab.study.frontier.Constraint`) nothing meets."""
    values = [(r, constraint.value(r)) for r in rows if not math.isnan(constraint.value(r))]
    if not values:
        return "none was measured on it"
    if constraint.name == "max_p99_ms":
        row, v = min(values, key=lambda t: t[1])
        return f"the fastest is {row.get('candidate')} at {v:.3g} ms"
    if constraint.name == "max_quality_drop":
        row, v = min(values, key=lambda t: t[1])
        return f"the smallest drop is {row.get('candidate')} at {fmt.drop(v)}"
    row, v = max(values, key=lambda t: t[1])
    return f"the closest agreement is {row.get('candidate')} at {v:.3f}"


def versus_baseline(best: dict, baseline: dict, column: str, objective: str,
                    side_by_side: SideBySide | None) -> str:
    """How the chosen candidate compares with the baseline, like with like."""
    name, base = str(best.get("candidate")), str(baseline.get("candidate"))
    ratio = None if side_by_side is None or objective == "size" else side_by_side.ratio(name, base)
    if ratio is not None:
        if ratio.too_close:
            return (f"against the baseline it is too close to call on this machine: {name} and {base} "
                    f"({ratio.close_interval()}; {side_by_side.how()})")
        if ratio.estimate < 1:  # the baseline is out of the running (it breaks a constraint), yet faster
            slower = ratio.flipped()
            return (f"the baseline ran {slower.estimate:.2f}x as fast as {name} side by side (95% CI "
                    f"{slower.low:.2f}-{slower.high:.2f}x, {side_by_side.how()}), so the separate measurements "
                    f"that ranked {name} cheaper or faster do not hold on this machine")
        return (f"{ratio.estimate:.2f}x faster than the baseline (95% CI {ratio.low:.2f}-{ratio.high:.2f}x, "
                f"{side_by_side.how()})")
    separate = "" if objective == "size" else ", from separate measurements (not re-timed side by side)"
    swept = costs.sweep_throughputs(best) or costs.sweep_throughputs(baseline)
    if swept and (column == "throughput_per_s" or (objective == "cost" and column == "cost_per_1m_usd")):
        same = costs.compare(best, baseline, names=(name, "the baseline"))
        if isinstance(same, str):
            return f"the comparison with the baseline is {same}"
        price = figure(best, "price_per_hour_usd") / figure(baseline, "price_per_hour_usd")
        times = same.ratio if column == "throughput_per_s" or math.isnan(price) else same.ratio / price
        note = f"; {same.note}" if same.note else ""
        return f"{times:.2f}x better than the baseline at batch {same.batch_size}{note}{separate}"
    ours, theirs = figure(best, column), figure(baseline, column)
    if not (ours > 0 and theirs > 0):
        return ""
    times = ours / theirs if column in HIGHER_IS_BETTER else theirs / ours
    return f"{times:.2f}x better than the baseline ({Formatter.objective(column, objective, theirs)}){separate}"


def versus_runner_up(best: dict, runner_up: dict | None, side_by_side: SideBySide | None) -> str:
    """How far ahead of the runner-up side by side; "too close to call" when the interleaved
    re-timing cannot tell the first two apart."""
    if runner_up is None or side_by_side is None:
        return ""
    name, other = str(best.get("candidate")), str(runner_up.get("candidate"))
    ratio = side_by_side.ratio(name, other)
    if ratio is None:
        return ""
    if not ratio.too_close:
        return (f"Side by side it ran {ratio.estimate:.2f}x as fast as the runner-up, {other} "
                f"(95% CI {ratio.low:.2f}-{ratio.high:.2f}x).")
    return (f"Too close to call on this machine: {name} and {other} ({ratio.close_interval()}; "
            f"{side_by_side.how()}); either will do, or measure on the target machine.")


def noisy_names(rows: list[dict]) -> list[str]:
    """Candidates among `rows` whose timing was flagged noisy."""
    return [str(r.get("candidate")) for r in rows if r is not None and _is_true(r.get("noisy"))]


def _is_true(value: Any) -> bool:
    return bool(value) and not (isinstance(value, float) and math.isnan(value)) and str(value).lower() != "false"


def noise(rows: list[dict], side_by_side: SideBySide | None = None) -> str:
    """A sentence for figures measured on a busy machine (empty when none was noisy)."""
    names = noisy_names(rows)
    shares = [figure(r, "busy_other_cpu_share") for r in rows if r is not None and str(r.get("candidate")) in names]
    if side_by_side is not None and side_by_side.busy_other_cpu_share is not None \
            and side_by_side.busy_other_cpu_share > 0.25:
        shares.append(side_by_side.busy_other_cpu_share)
        names = names or ["the side-by-side re-timing"]
    if not names:
        return ""
    shares = [s for s in shares if not math.isnan(s)]
    who = ", ".join(dict.fromkeys(names))
    if shares and max(shares) > 0.25:
        return (f"Noisy: {who} measured while other processes used {max(shares):.0%} of the CPU: "
                f"re-run on a quiet machine before deciding.")
    return (f"Noisy: {who} timed with a wide p99 interval or a repeat that disagreed: "
            f"re-run on a quiet machine before deciding.")


# --- the whole sentence ----------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """What the explanation of a choice needs: the winner, the runner-up and how they were ranked."""

    best: dict
    runner_up: dict | None
    rows: list
    column: str
    objective: str
    words: str
    short: str
    overtaken: Ratio | None = None  # side by side, `best` ran clearly faster than the one ranked first

    @property
    def baseline(self) -> dict | None:
        return next((r for r in self.rows if r.get("family") == "baseline"), None)


def choice_too_close(choice: Choice, side_by_side: SideBySide | None) -> tuple[str, ...]:
    """(winner, runner-up) when the side-by-side re-timing cannot tell them apart, else ()."""
    if side_by_side is None or choice.runner_up is None:
        return ()
    name, other = str(choice.best.get("candidate")), str(choice.runner_up.get("candidate"))
    ratio = side_by_side.ratio(name, other)
    return (name, other) if ratio is not None and ratio.too_close else ()


def explain_choice(choice: Choice, described: str, n_passing: int, n_unranked: int, fmt: Formatter,
                   side_by_side: SideBySide | None) -> str:
    """The sentence for a chosen candidate: what it wins on, against the baseline, how sure."""
    best, column, objective = choice.best, choice.column, choice.objective
    text = (f"{best.get('candidate')}: the best {choice.words} "
            f"({Formatter.objective(column, objective, figure(best, column))}) among "
            f"{n_passing} of {len(choice.rows)} candidates meeting {described}")
    if n_unranked:
        text += f" ({n_unranked} not measured for {choice.short})"
    baseline = choice.baseline
    if baseline is not None and baseline is not best:
        versus = versus_baseline(best, baseline, column, objective, side_by_side)
        if versus:
            text += "; " + versus
    details = []
    p99 = figure(best, "p99_ms")
    if not math.isnan(p99):
        details.append(f"p99 {p99:.3g} ms")
    lost = drop(best)
    if not math.isnan(lost):
        low, high = figure(best, "quality_drop_ci_low"), figure(best, "quality_drop_ci_high")
        interval = ("" if math.isnan(low) or math.isnan(high) else
                    f" (95% CI {fmt.drop(low, units=False)} to {fmt.drop(high, units=False)})")
        details.append(f"quality drop {fmt.drop(lost)}{interval}")
    if details:
        text += "; " + ", ".join(details)
    text += "."
    if choice.overtaken is not None:
        ratio = choice.overtaken
        text += (f" Side by side on this machine it ran {ratio.estimate:.2f}x as fast as {ratio.slower} "
                 f"(95% CI {ratio.low:.2f}-{ratio.high:.2f}x), which the separate measurements ranked first.")
    for sentence in ("" if choice.overtaken else versus_runner_up(best, choice.runner_up, side_by_side),
                     noise([best, baseline, choice.runner_up], side_by_side)):
        if sentence:
            text += " " + sentence
    return text


def noisy_marks(df):
    """A Series aligned with `df`: "noisy" where a row's timing was flagged noisy, else "" (the
    marker tables print beside the figures; all "" when the frame has no `noisy` column)."""
    import pandas as pd

    if "noisy" not in getattr(df, "columns", ()):
        return pd.Series("", index=df.index, dtype="object")
    return df["noisy"].map(lambda value: "noisy" if _is_true(value) else "").astype("object")
