"""bench llm's goodput-ratio verdicts: a lower bound on the faster engine can pass a goal (the ratio is at
least that), never miss one; a lower bound on the slower engine judges nothing."""
from __future__ import annotations

import pandas as pd

from optlab.bench.llm import ratio_target

BOUND = "still within the SLA at the highest rate probed (256/s): a lower bound"


def _summary(fast_note: str = "", slow_note: str = "", fast: float = 256.0, slow: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame([{"engine": "openvino", "goodput_per_s": fast, "note": fast_note},
                         {"engine": "generate", "goodput_per_s": slow, "note": slow_note}])


def test_a_lower_bound_on_the_faster_engine_passes_as_at_least():
    row = ratio_target(_summary(fast_note=BOUND), "openvino", "generate", "ov vs naive", 3.0, smoke=False)
    assert row["met"] is True and "at least 256.00x" in row["sentence"]


def test_a_lower_bound_below_the_goal_is_not_a_miss():
    row = ratio_target(_summary(fast_note=BOUND, fast=2.0), "openvino", "generate", "ov vs naive", 3.0, smoke=False)
    assert row["met"] is None


def test_a_lower_bound_on_the_slower_engine_judges_nothing_and_plain_ratios_are_judged():
    row = ratio_target(_summary(slow_note=BOUND), "openvino", "generate", "ov vs naive", 3.0, smoke=False)
    assert row["met"] is None and "not judged" in row["sentence"]
    assert ratio_target(_summary(fast=2.0), "openvino", "generate", "x", 3.0, smoke=False)["met"] is False
    assert ratio_target(_summary(), "openvino", "generate", "x", 3.0, smoke=False)["met"] is True


def _nncf(size_ratio: float | None, rise: float | None, stored: str = "int4 on 14 of 16 matrices") -> pd.DataFrame:
    return pd.DataFrame([{"weights": "fp32", "recipe": "ov_weights(bits=32)", "bits": 32, "awq": False},
                         {"weights": "NNCF int4 g32 asym", "recipe": "ov_weights(bits=4)", "bits": 4, "awq": False,
                          "size_mb": 1.0, "size_ratio": size_ratio, "perplexity": 10.0, "perplexity_rise": rise,
                          "speed_vs_fp32": None, "stored": stored}])


def test_the_nncf_int4_target_judges_the_int4_row_on_size_and_perplexity_and_says_what_is_stored():
    from optlab.bench.llm_nncf import nncf_int4_target

    met = nncf_int4_target(_nncf(0.2, 0.05), smoke=False)
    assert met["met"] is True and "stored: int4 on 14 of 16 matrices" in met["sentence"]
    assert nncf_int4_target(_nncf(0.4, 0.05), smoke=False)["met"] is False
    assert nncf_int4_target(_nncf(0.2, 0.15), smoke=False)["met"] is False
    assert nncf_int4_target(_nncf(0.2, 0.05), smoke=True)["met"] is None
    failed = nncf_int4_target(_nncf(None, None, "failed: RuntimeError: no int4"), smoke=False)
    assert failed["met"] is None and "not available (failed: RuntimeError: no int4)" in failed["sentence"]


def test_an_upper_bound_on_the_slower_engine_makes_the_ratio_at_least_and_never_a_miss():
    """A slow engine whose time budget ran out before any rate passed is below its failing rate: the ratio
    against it is a lower bound (passes a goal, never misses one); an upper bound on the faster one compares
    nothing. The summary keeps the bound, never a zero goodput."""
    from optlab.bench.llm import goodput_summary

    rounds = pd.DataFrame([
        {"round": r, "engine": e, "goodput_per_s": g, "goodput_upper_per_s": u, "bound": b, "note": ""}
        for r in range(3) for e, g, u, b in (("openvino", 64.0 + r, None, ""), ("generate", 0.0, 1.5 + r, "upper"))])
    summary = goodput_summary(rounds)
    slow = summary.set_index("engine").loc["generate"]
    assert slow["bound"] == "upper" and slow["goodput_upper_per_s"] == 3.5 and pd.isna(slow["goodput_per_s"])
    assert slow["goodput"] == "< 3.5/s"
    row = ratio_target(summary, "openvino", "generate", "ov vs naive", 3.0, smoke=False)
    assert row["met"] is True and "at least 18.57x" in row["sentence"] and "< 3.5/s" in row["sentence"]
    assert ratio_target(summary, "openvino", "generate", "ov vs naive", 30.0, smoke=False)["met"] is None
    flipped = ratio_target(summary, "generate", "openvino", "naive vs ov", 3.0, smoke=False)
    assert flipped["met"] is None and "only bounded from above" in flipped["sentence"]


def test_rounds_that_disagree_are_said_and_judge_nothing():
    from optlab.bench.llm import goodput_summary

    rounds = pd.DataFrame([
        {"round": 0, "engine": "paged", "goodput_per_s": 3.31, "goodput_upper_per_s": None, "bound": "lower",
         "note": "still within the SLA at the highest rate probed (3.31/s): a lower bound"},
        *({"round": r, "engine": "paged", "goodput_per_s": 0.0, "goodput_upper_per_s": 3.31, "bound": "upper",
           "note": ""} for r in (1, 2)),
        *({"round": r, "engine": "static", "goodput_per_s": 1.0, "goodput_upper_per_s": 1.2, "bound": "", "note": ""}
          for r in range(3))])
    summary = goodput_summary(rounds)
    paged = summary.set_index("engine").loc["paged"]
    assert paged["bound"] == "mixed" and paged["goodput"] == "3.31/s in 1 of 3 rounds, < 3.31/s in the others"
    row = ratio_target(summary, "paged", "static", "paged vs static", 1.5, smoke=False, rounds=rounds)
    assert row["met"] is None and "paged's rounds disagree; per round: >= 3.31x, -, -" in row["sentence"]
    assert "too few rounds bound the ratio" in row["sentence"]


def test_a_ratio_whose_rounds_disagree_is_judged_on_the_floor_of_their_median():
    """Round 1 found no rate for the faster engine (a stall): rounds 0 and 2 are at least 19.9x and 18.2x, so
    the median of the three is at least 18.2x whatever round 1 was; with only one round bounding it, nothing."""
    from optlab.bench.llm import goodput_summary, round_ratio_floors

    def frame(fast_rounds):
        rows = [{"round": r, "engine": "generate", "goodput_per_s": 0.0, "goodput_upper_per_s": 2.11,
                 "bound": "upper", "note": ""} for r in range(3)]
        return pd.DataFrame(rows + [{"round": r, "engine": "openvino", "goodput_per_s": g, "goodput_upper_per_s": u,
                                     "bound": b, "note": ""} for r, (g, u, b) in enumerate(fast_rounds)])
    rounds = frame([(42.0, None, "lower"), (0.0, 10.5, "upper"), (38.42, 44.0, "")])
    assert [None if f is None else round(f, 1) for f in round_ratio_floors(rounds, "openvino", "generate")] == \
        [19.9, None, 18.2]
    row = ratio_target(goodput_summary(rounds), "openvino", "generate", "ov vs naive", 3.0, smoke=False,
                       rounds=rounds)
    assert row["met"] is True and round(row["figure"], 1) == 18.2 and "2 of them are at least that" in row["sentence"]
    lonely = frame([(42.0, None, "lower"), (0.0, 10.5, "upper"), (0.0, 9.0, "upper")])
    row = ratio_target(goodput_summary(lonely), "openvino", "generate", "ov vs naive", 3.0, smoke=False,
                       rounds=lonely)
    assert row["met"] is None and "too few rounds bound the ratio" in row["sentence"]


def test_same_tokens_compares_what_both_runs_produced_and_catches_one_different_token():
    from optlab.bench.llm import same_tokens

    reference = {"a": [1, 2, 3], "b": [4, 5], "c": [6]}
    assert same_tokens({"a": [1, 2, 3], "b": [4, 5], "c": [6]}, reference)
    assert same_tokens({"a": [1, 2], "b": [], "c": [6]}, reference)  # cut short by an early stop
    assert not same_tokens({"a": [1, 9, 3], "b": [4, 5], "c": [6]}, reference)
