"""MLPerf LoadGen drives the same server through the SUT/QSL adapter; its summary becomes a row."""
from __future__ import annotations

import numpy as np
import pytest

from optlab.serving.policies import DynamicBatching, NoBatching
from optlab.serving.referee import loadgen_run, parse_summary
from optlab.serving.server import Server

PAYLOADS = [{"x": np.full((1, 8), i, np.float32)} for i in range(16)]


def score(batch):
    return batch["x"].sum(axis=1)


def test_a_short_server_run_is_valid(tmp_path):
    # the model takes microseconds; the latency target only has to survive a busy shared machine's stalls
    row = loadgen_run(Server(score, DynamicBatching(8, 1.0)), PAYLOADS, "Server", target_qps=300,
                      target_latency_ms=250.0, min_query_count=700, min_duration_s=2.0, outdir=tmp_path)
    assert row["result"] == "VALID" and row["valid"], row["summary"]
    assert 250 <= row["achieved_per_s"] <= 350 and row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert (tmp_path / "mlperf_log_summary.txt").is_file() and row["errors"] == 0


def test_single_stream_and_offline_report_their_throughput(tmp_path):
    single = loadgen_run(Server(score, NoBatching()), PAYLOADS, "SingleStream", min_query_count=200,
                         min_duration_s=0.2, outdir=tmp_path / "single")
    assert single["achieved_per_s"] > 0 and single["p99_ms"] > 0
    offline = loadgen_run(Server(score, DynamicBatching(64, 1.0)), PAYLOADS, "Offline", target_qps=2000,
                          min_query_count=1000, min_duration_s=0.2, outdir=tmp_path / "offline")
    assert offline["achieved_per_s"] > 0 and offline["scenario"] == "Offline"


def test_a_failing_model_completes_with_its_error_count(tmp_path):
    def broken(batch):
        raise RuntimeError("no weights")
    row = loadgen_run(Server(broken, NoBatching()), PAYLOADS, "Server", target_qps=200, min_query_count=100,
                      min_duration_s=0.3, target_latency_ms=100.0, outdir=tmp_path)
    assert row["errors"] >= 100


def test_bad_scenarios_are_refused_and_summaries_parse():
    with pytest.raises(ValueError, match="unknown LoadGen scenario"):
        loadgen_run(Server(score), PAYLOADS, "MultiStreamish")
    with pytest.raises(ValueError, match="target_qps"):
        loadgen_run(Server(score), PAYLOADS, "Server")
    parsed = parse_summary("Result is : VALID\n * Early stopping 90th percentile estimate: 1234\n")
    assert parsed == {"Result is": "VALID", "Early stopping 90th percentile estimate": "1234"}


def test_coalesced_server_queries_are_all_answered(tmp_path):
    row = loadgen_run(Server(score, DynamicBatching(16, 1.0)), PAYLOADS, "Server", target_qps=2000, coalesce=True,
                      target_latency_ms=250.0, min_query_count=1000, min_duration_s=0.5, outdir=tmp_path)
    assert row["errors"] == 0 and 1500 <= row["achieved_per_s"] <= 2500


def test_agreement_says_whether_and_why_not():
    from optlab.serving.referee import agreement

    assert agreement(1.02, 3, 5).startswith("optlab and LoadGen agree")
    assert "optlab higher" in agreement(12.6, 5, 5) and "scheduled time" in agreement(12.6, 5, 5)
    assert "LoadGen higher" in agreement(0.39, 2, 5)
    assert "none of 5 round(s) VALID" in agreement(float("nan"), 0, 5)


def test_loadgen_headroom_with_a_no_op_sut_is_a_rate_it_passed():
    from optlab.serving.referee import loadgen_headroom

    # a 250 ms "SLA" only has to survive a busy shared machine's stalls: this checks the search, not speed
    best, curve = loadgen_headroom(sla_ms=250.0, start_per_s=200.0, max_per_s=400.0, probe_s=0.3, min_queries=100)
    assert list(curve["offered_per_s"]) == [200.0, 400.0]
    assert best in (0.0, 200.0, 400.0)
    assert best == (curve.loc[curve["passed"], "offered_per_s"].max() if curve["passed"].any() else 0.0)
    assert set(curve["result"]) <= {"VALID", "INVALID"}
