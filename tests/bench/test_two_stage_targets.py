"""The two-stage and routing sections' verdicts from made-up rounds: ratios within rounds, "too close to
call" when their range includes 1, nothing non-finite printed, and a missing figure said in words."""
import pandas as pd

from optlab.bench.routing import ONE_LM, ROUTER, cost_per_1m, targets
from optlab.bench.two_stage import cost_row, noisy, ratio_target
from optlab.serving.cascade_serving import EXPENSIVE_ALONE, TWO_STAGE


def rounds(two, alone):
    return pd.DataFrame([{"deployment": d, "round": r, "throughput_at_sla_per_s": v}
                         for r, (a, b) in enumerate(zip(two, alone, strict=True)) for d, v in
                         ((TWO_STAGE, a), (EXPENSIVE_ALONE, b))])


def test_a_ratio_whose_rounds_straddle_one_is_too_close_to_call():
    assert "too close to call" in ratio_target(rounds([90, 110, 105], [100, 100, 100]), "digits", TWO_STAGE,
                                               EXPENSIVE_ALONE)["sentence"]
    clear = ratio_target(rounds([300, 310, 290], [100, 100, 100]), "digits", TWO_STAGE, EXPENSIVE_ALONE)
    assert clear["figure"] == 3.0 and ": higher" in clear["sentence"]
    none = ratio_target(rounds([0, 0], [0, 0]), "digits", TWO_STAGE, EXPENSIVE_ALONE)
    assert none["figure"] is None and "not available" in none["sentence"]


def test_costs_are_missing_not_infinite_without_a_throughput_and_noisy_says_why():
    assert cost_row(0.0) == {"machines_for_peak": None, "cost_per_month_usd": None, "cost_per_1m_usd": None}
    assert cost_row(700.0)["machines_for_peak"] == 4  # 1,500/s at the peak, 70% of 700/s each
    assert cost_per_1m(None) is None and cost_per_1m(0.0) is None
    row = {"throughput_at_sla_per_s_low": 100.0, "throughput_at_sla_per_s_high": 150.0, "rounds": 3}
    assert "rounds differ by 50%" in noisy(row, headroom=10_000) and noisy({**row, "throughput_at_sla_per_s_high":
                                                                           105.0}, headroom=10_000) == ""


def test_routing_targets_compare_both_ways_per_route_and_say_when_a_route_is_missing():
    table = pd.DataFrame([
        {"deployment": ONE_LM, "route": "classify", "cost_per_1m_usd": 3.0, "p99_ms": 1000.0, "noisy": ""},
        {"deployment": ROUTER, "route": "classify", "cost_per_1m_usd": 0.06, "p99_ms": 25.0, "noisy": ""},
        {"deployment": ONE_LM, "route": "generate", "cost_per_1m_usd": None, "p99_ms": None, "noisy": ""},
        {"deployment": ROUTER, "route": "generate", "cost_per_1m_usd": 3.0, "p99_ms": 300.0, "noisy": ""}])
    classify, generate = targets(table)
    assert classify["figure"] == 50.0 and "p99 1,000.0 vs 25.0 ms = 40.00x" in classify["sentence"]
    assert generate["figure"] is None and "not available" in generate["sentence"]
