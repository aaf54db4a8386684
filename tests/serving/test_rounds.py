"""Interleaved rounds: ratios within a round, their median and range, and the headroom flag."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from optlab.serving.rounds import Spread, headroom_flag, median_rounds, round_ratio

RUNS = pd.DataFrame({
    "deployment": ["naive", "optimized"] * 3,
    "round": [0, 0, 1, 1, 2, 2],
    "throughput_at_sla_per_s": [100.0, 1000.0, 50.0, 900.0, 200.0, 400.0],
    "p99_at_sla_load_ms": [9.0, 8.0, 9.5, 7.0, 9.9, 6.0],
})


def test_the_ratio_is_taken_within_each_round_and_reported_as_median_and_range():
    spread = round_ratio(RUNS, "optimized", "naive")
    assert spread == Spread(median=10.0, low=2.0, high=18.0, rounds=3)  # per round: 10, 18, 2
    assert spread.text() == "10.00x (range 2.00-18.00x, 3 rounds)"


def test_the_median_round_is_a_real_row_with_the_range_beside_it():
    table = median_rounds(RUNS).set_index("deployment")
    assert table.loc["optimized", "throughput_at_sla_per_s"] == 900.0  # never the best round (1000)
    assert table.loc["optimized", "p99_at_sla_load_ms"] == 7.0  # from the same round
    optimized = table.loc["optimized"]
    assert (optimized["throughput_at_sla_per_s_low"], optimized["throughput_at_sla_per_s_high"]) == (400.0, 1000.0)
    assert table.loc["naive", "rounds_values"] == "100, 50, 200" and table.loc["naive", "rounds"] == 3


def test_no_finite_round_is_said_not_available_and_a_missing_name_is_refused():
    empty = Spread.of([math.nan, None])
    assert not empty.available and "not available" in empty.text()
    zero = RUNS.assign(throughput_at_sla_per_s=[0.0, 5.0] * 3)
    assert not round_ratio(zero, "optimized", "naive").available  # a zero denominator is no ratio
    with pytest.raises(ValueError, match="no rows for reasonable"):
        round_ratio(RUNS, "optimized", "reasonable")


def test_rates_above_half_the_headroom_are_flagged():
    assert headroom_flag(400, 1000) == ""
    assert "above half" in headroom_flag(600, 1000)
    assert "not available" in headroom_flag(600, None) and "not available" in headroom_flag(600, float("nan"))
    assert "0/s here" in headroom_flag(600, 0.0)
