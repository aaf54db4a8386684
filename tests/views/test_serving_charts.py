"""Serving charts read the serving frames and draw them; they never measure."""
from __future__ import annotations

import pandas as pd
import pytest

from optlab.views import serving_charts


def test_latency_vs_load_draws_one_line_per_policy_with_the_sla():
    curve = pd.DataFrame({"label": ["none", "none", "dynamic", "dynamic"], "offered_per_s": [100, 200, 100, 200],
                          "p99_ms": [1.0, 20.0, 2.0, 3.0], "below_half_headroom": [True, False, True, True]})
    spec = serving_charts.latency_vs_load(curve, max_p99_ms=10).to_dict()
    assert spec["layer"][0]["encoding"]["color"]["field"] == "label"
    rules = [layer for layer in spec["layer"] if layer.get("mark", {}).get("type") == "rule"]
    assert rules and rules[0]["encoding"]["y"]["field"] == "sla" and [{"sla": 10}] in spec["datasets"].values()


def test_throughput_and_burst_charts_render_and_name_missing_columns():
    frame = pd.DataFrame({"policy": ["none", "dynamic"], "throughput_at_sla_per_s": [100.0, 400.0],
                          "curve": [None, None]})
    assert serving_charts.throughput_at_sla(frame).to_dict()["mark"]["type"] == "bar"
    series = pd.DataFrame({"time_s": [0.0, 1.0], "sent": [10, 30], "ok": [10, 25], "shed": [0, 5],
                           "p99_ms": [2.0, 9.0]})
    assert len(serving_charts.burst_timeline(series, max_p99_ms=10).to_dict()["vconcat"]) == 2
    with pytest.raises(ValueError, match="p99_ms"):
        serving_charts.latency_vs_load(pd.DataFrame({"label": [], "offered_per_s": []}))


def test_cache_effect_draws_p99_and_throughput_side_by_side():
    runs = pd.DataFrame({"label": ["cache", "no cache"], "p99_ms": [1.0, 4.0], "achieved_per_s": [900.0, 880.0],
                         "cache_hit_rate": [0.6, float("nan")]})
    spec = serving_charts.cache_effect(runs).to_dict()
    assert [panel["encoding"]["x"]["field"] for panel in spec["hconcat"]] == ["p99_ms", "achieved_per_s"]
