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
