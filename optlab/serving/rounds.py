"""Figures from interleaved rounds: the median with its range, never the best round.

A shared machine stalls at random; measuring every contender once per round, round after round,
puts a stall into one round of all contenders rather than into one contender. A ratio is then
taken *within* each round (numerator and denominator under the same conditions) and reported as
the median of those per-round ratios with their min-max range, so an unstable figure shows as a
wide range instead of hiding behind a lucky round. Rates are checked against the load
generator's measured headroom: above half of it, the generator's own delay is in the figure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Spread:
    """The median of per-round values with their range and the number of rounds."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values) -> "Spread":
        finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
        if not len(finite):
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(float(np.median(finite)), float(finite.min()), float(finite.max()), len(finite))

    @property
    def available(self) -> bool:
        return self.rounds > 0

    def text(self, unit: str = "x", digits: int = 2) -> str:
        """`7.34x (range 2.83-11.20x, 3 rounds)`; "not available" when no round gave a finite value."""
        if not self.available:
            return "not available (no round gave a finite value)"
        if self.rounds == 1:
            return f"{self.median:.{digits}f}{unit} (1 round: no range)"
        return (f"{self.median:.{digits}f}{unit} (range {self.low:.{digits}f}-{self.high:.{digits}f}{unit}, "
                f"{self.rounds} rounds)")


def round_ratio(runs: pd.DataFrame, numerator: str, denominator: str, *, value: str = "throughput_at_sla_per_s",
                by: str = "deployment", round_column: str = "round") -> Spread:
    """`numerator / denominator` of `value` within each round (rows keyed by `by` and `round_column`),
    as the median and range over the rounds where both are measured and the denominator is > 0."""
    table = runs.pivot_table(index=round_column, columns=by, values=value, aggfunc="first")
    missing = [name for name in (numerator, denominator) if name not in table.columns]
    if missing:
        have = ", ".join(map(str, table.columns))
        raise ValueError(f"no rows for {', '.join(missing)} in column {by!r}; have {have}")
    top, bottom = table[numerator].to_numpy(float), table[denominator].to_numpy(float)
    return Spread.of([t / b for t, b in zip(top, bottom, strict=True) if b > 0])


def median_rounds(runs: pd.DataFrame, *, value: str = "throughput_at_sla_per_s", by: str = "deployment",
                  round_column: str = "round") -> pd.DataFrame:
    """One row per `by` (first-seen order): the round whose `value` is the median (the lower middle
    of an even count, so the row is a real measurement), with `{value}_low`, `{value}_high`,
    `rounds` and `rounds_values` (every round's figure) added."""
    rows = []
    for name, group in runs.groupby(by, sort=False):
        ordered = group.sort_values(value, kind="stable")
        middle = ordered.iloc[(len(ordered) - 1) // 2].to_dict()
        values = group.sort_values(round_column)[value].to_numpy(float)
        rows.append({**middle, by: name, f"{value}_low": float(np.nanmin(values)) if len(values) else math.nan,
                     f"{value}_high": float(np.nanmax(values)) if len(values) else math.nan,
                     "rounds": len(values), "rounds_values": ", ".join(f"{v:.0f}" for v in values)})
    return pd.DataFrame(rows)


def headroom_flag(rate_per_s: float, headroom_per_s: float | None, who: str = "the generator") -> str:
    """"" when `rate_per_s` is at most half of `headroom_per_s`; else a flag saying so (also when
    the headroom was not measured)."""
    if headroom_per_s is None or not math.isfinite(headroom_per_s):
        return f"  [{who}'s headroom not available: unchecked]"
    if headroom_per_s <= 0:
        return f"  [{who}'s headroom is 0/s here (no rate passed): its own delay is in this figure, flagged]"
    if rate_per_s > headroom_per_s / 2:
        return (f"  [above half of {who}'s headroom ({headroom_per_s:.0f}/s): its own delay is in this figure, "
                "flagged]")
    return ""
