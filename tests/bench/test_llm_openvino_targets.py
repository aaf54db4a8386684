"""bench llm's OpenVINO section verdicts: one changed token misses the greedy-identity target; optlab vs
PerfMetrics is met only within 0.9-1.1 on both TTFT and TPOT, unjudged in smoke, and a missing figure reads
"not available", never nan."""
from __future__ import annotations

import pandas as pd

from optlab.bench.llm_openvino import openvino_metrics_summary, openvino_metrics_targets, openvino_speculative_targets


def _speculative(identical: bool) -> pd.DataFrame:
    rows = []
    for load, requests in (("low", 2), ("high", 12)):
        rows += [{"round": 0, "load": load, "engine": "without", "tpot_p50_ms": 2.0, "identical": True,
                  "requests": requests},
                 {"round": 0, "load": load, "engine": "speculative k=4", "tpot_p50_ms": 1.0,
                  "identical": identical or load == "low", "requests": requests}]
    return pd.DataFrame(rows)


def test_speculative_tpot_ratios_are_shown_and_one_changed_token_misses_identity():
    rows = openvino_speculative_targets(_speculative(True), "tiny")
    assert [r["figure"] for r in rows[:2]] == [0.5, 0.5] and all(r["met"] is None for r in rows[:2])
    assert rows[2]["met"] is True
    assert openvino_speculative_targets(_speculative(False), "tiny")[2]["met"] is False


def _metrics(engine_ratio: float | None, tpot_ratio: float | None, delivery_ratio: float = 1.5) -> pd.DataFrame:
    return pd.DataFrame([{"round": 0, "engine": "openvino-single", "optlab_ttft_ms": 3.0, "genai_ttft_ms": 2.0,
                          "engine_ttft_ms": 2.0 * (engine_ratio or 1.0), "ttft_ratio": delivery_ratio,
                          "engine_ratio": engine_ratio, "optlab_tpot_ms": 1.0, "genai_tpot_ms": 1.0,
                          "tpot_ratio": tpot_ratio, "before_ms": 0.8, "submit_ms": 0.01, "lag_ms": 0.1,
                          "after_ms": 0.09}])


def judge(engine_ratio: float | None, tpot_ratio: float | None, smoke: bool = False,
          delivery_ratio: float = 1.5) -> dict:
    return openvino_metrics_targets(openvino_metrics_summary(_metrics(engine_ratio, tpot_ratio, delivery_ratio)),
                                    smoke)[0]


def test_perf_metrics_agreement_is_judged_on_the_same_interval_within_ten_percent_on_both():
    met = judge(1.05, 0.95)
    assert met["met"] is True and met["figure"] == 1.05  # the delivery TTFT (1.5x GenAI's) is shown, not judged
    assert "delivery TTFT" in met["sentence"] and "1.50x" in met["sentence"]
    assert "schedule to hand-over 0.8 ms" in met["sentence"] and "GenAI's first-token stamp to optlab's engine 0.1 ms" \
        in met["sentence"]
    assert judge(1.2, 1.0, delivery_ratio=1.0)["met"] is False and judge(1.0, 0.85)["met"] is False
    assert judge(1.05, 0.95, smoke=True)["met"] is None
    missing = judge(None, 1.0)
    assert missing["met"] is None and "not available" in missing["sentence"] and "nan" not in missing["sentence"]
