"""The serving and rtb benches render what their steps return: each step's frame (made up, in the
shape the measuring code hands back) goes through its `show_*` function and its `*_targets`
function; the printed sentences, the targets table and the JSON are checked. No timing target:
the figures are invented, only the shape and wording are judged."""
from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest

from optlab.bench import rtb, rtb_http, serving
from optlab.bench.render import TARGET_COLUMNS, Renderer
from optlab.cases.rtb import casestudy as cs
from optlab.serving.lean_app import STAGES


def _out() -> tuple[Renderer, io.StringIO]:
    printed = io.StringIO()
    return Renderer("test", "python -m optlab.bench test", out=printed), printed


def _no_nan(text: str) -> None:
    assert "nan" not in text.replace("nanoseconds", ""), text


def _goodput_rows(by: str, names, rates, rounds: int = 2) -> pd.DataFrame:
    """Rows as `throughput_at_sla(...).row()` plus the name and round columns."""
    return pd.DataFrame([{by: name, "round": r, "throughput_at_sla_per_s": rate * (1 + 0.1 * r),
                          "p99_at_sla_load_ms": 8.5, "max_p99_ms": 10.0, "sla_met": rate > 0, "probes": 5,
                          "note": "" if rate > 0 else "nothing meets p99 <= 10 ms"}
                         for r in range(rounds) for name, rate in zip(names, rates, strict=True)])


# serving ------------------------------------------------------------------------------------------

def test_serving_headroom_says_why_no_rate_passed():
    curve = pd.DataFrame({"offered_per_s": [500.0, 1000.0], "p99_ms": [2.5, 3.0], "send_lag_p99_ms": [1.0, 2.0]})
    out, printed = _out()
    serving.show_headroom(out, 0.0, curve)
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("1. generator headroom (no-op server, p99 <= 1 ms): 0/s  [500/s: p99 2.50 ms")
    assert "no rate passed: a no-op server's p99 is 2.50-3.00 ms" in lines[1]
    out, printed = _out()
    serving.show_headroom(out, 1000.0, curve)
    assert len(printed.getvalue().splitlines()) == 1 and "generator_headroom" in out.tables


def test_serving_goodput_judges_dynamic_over_none_within_rounds():
    names = ("none", "dynamic(max_batch=64, max_wait_ms=0.5)", "dynamic(max_batch=64, max_wait_ms=2)")
    runs = _goodput_rows("policy", names, (1000.0, 2500.0, 4000.0))
    out, printed = _out()
    table = serving.show_goodput(out, runs, headroom=20000.0, candidate="int8")
    text = printed.getvalue()
    assert text.startswith("2. throughput at p99 <= 10 ms, bids int8, one-row requests, median of 2 interleaved")
    assert "   none: 1000/s (range 1000-1100; 1000, 1100), p99 8.50 ms in the median round\n" in text
    assert "   best dynamic (dynamic(max_batch=64, max_wait_ms=2)) / none = 4.00x" in text
    assert "[target >= 3x: ok]" in text
    assert serving.best_dynamic(table).policy == names[2]
    (row,) = serving.goodput_targets(runs, table)
    assert set(row) == set(TARGET_COLUMNS) and row["met"] is True and row["figure"] == pytest.approx(4.0)


def test_serving_goodput_with_no_rate_at_the_sla_is_not_available_never_nan():
    runs = _goodput_rows("policy", ("none", "dynamic(max_batch=64, max_wait_ms=2)"), (0.0, 0.0), rounds=1)
    out, printed = _out()
    serving.show_goodput(out, runs, headroom=0.0, candidate="int8", step="2b.")
    text = printed.getvalue()
    assert "[target >= 3x: not available]" in text and "nothing meets p99 <= 10 ms" in text
    _no_nan(text)
    assert out.target_rows[0]["figure"] is None and out.target_rows[0]["met"] is None
    assert {"goodput_2b", "goodput_rounds_2b"} <= set(out.tables)


def test_serving_cross_rate_takes_the_smallest_positive_bound():
    curve = pd.DataFrame({"offered_per_s": [500.0], "p99_ms": [0.4], "result": ["VALID"]})
    out, printed = _out()
    bounds = serving.cross_bounds(headroom=6000.0, theirs=0.0, dynamic_per_s=2000.0)
    assert serving.show_cross_rate(out, 0.0, curve, bounds) == 1000.0
    assert "cross-check rate 1000/s = half the dynamic server's throughput at the SLA" in printed.getvalue()
    assert serving.show_cross_rate(out, 0.0, curve, serving.cross_bounds(0.0, 0.0, 0.0)) == 0.0
    assert serving.cross_skip(0.0, 1000) == "skipped: no usable rate (a headroom of 0)"
    assert serving.cross_skip(10.0, serving.cross_queries(10.0, smoke=True)).startswith("skipped: 1000 queries")
    assert serving.cross_skip(1000.0, serving.cross_queries(1000.0, smoke=True)) == ""


def test_serving_cross_check_judges_valid_rounds_only():
    rows = pd.DataFrame({"round": [0, 1, 2], "rate_per_s": 1000.0, "queries": 3000,
                         "optlab_p99_ms": [2.0, 2.2, 9.0], "loadgen_p99_ms": [2.0, 2.0, 3.0],
                         "loadgen_result": ["VALID", "VALID", "INVALID"]})
    out, printed = _out()
    serving.show_cross_check(out, rows, "dynamic")
    text = printed.getvalue()
    assert "p99 at 1000/s (dynamic), 3 interleaved rounds x 3000 queries" in text
    assert "9.000 / 3.000 ms = 3.000 [INVALID]" in text
    assert "LoadGen VALID rounds 1.050 (range 1.000-1.100, 2 rounds)  [target 0.85-1.15 on VALID rounds: ok]" in text
    assert out.target_rows[-1]["met"] is True
    invalid = rows.assign(loadgen_result="INVALID")
    assert serving.cross_check_targets(invalid)[0]["met"] is None


def test_serving_offline_is_judged_only_above_a_millisecond():
    out, printed = _out()
    serving.show_offline(out, {"achieved_per_s": 20000.0}, goodput=5000.0, service={1: 0.05, 64: 0.64},
                         policy="dynamic")
    text = printed.getvalue()
    assert text.startswith("4. throughput at the SLA 5000/s vs LoadGen Offline 20000 samples/s (dynamic): 25.0%")
    assert "batch-1 service is 50 us (< 1 ms), so the 50% aim does not apply" in text
    assert out.target_rows[0]["met"] is None
    (slow,) = serving.offline_targets(5000.0, 20000.0, batch1_ms=2.0, policy="dynamic")
    assert slow["met"] is False and slow["figure"] == pytest.approx(0.25)


def test_serving_mg1_summary_and_line():
    frame = pd.DataFrame({"service_ms": [5.0, 5.2, 4.8, 5.0], "scheduled_s": [0.0, 0.01, 0.02, 0.03],
                          "wait_ms": [1.0, 2.0, 3.0, 2.0], "send_lag_ms": [0.1, 0.1, 0.2, 0.1],
                          "transport_ms": [0.0, 0.0, 0.0, 0.0]})
    summary = serving.mg1_summary(frame)
    assert summary["requests"] == 4 and summary["rate_per_s"] == pytest.approx(100.0)
    assert summary["measured_wait_ms"] == pytest.approx(1.875)
    out, printed = _out()
    serving.show_mg1(out, summary, headroom=50.0)
    text = printed.getvalue()
    assert text.startswith("5. M/G/1 at 50% load, 4 requests: mean wait in the queue 1.88 ms vs Pollaczek-Khinchine")
    assert "the generator's headroom" in text  # 100/s is above half a 50/s headroom: flagged
    _no_nan(text)


def test_serving_json_keeps_tables_lines_and_targets(tmp_path):
    out, _ = _out()
    runs = _goodput_rows("policy", ("none", "dynamic(max_batch=64, max_wait_ms=2)"), (1000.0, 3500.0))
    serving.show_goodput(out, runs, headroom=20000.0, candidate="int8")
    out.write_json(tmp_path / "s.json")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["targets"][0]["met"] is True and len(saved["tables"]["goodput_rounds_2"]) == 4
    assert saved["lines"][0].startswith("2. throughput at p99 <= 10 ms")


# rtb ----------------------------------------------------------------------------------------------

def _quality(drop: float) -> pd.DataFrame:
    return pd.DataFrame([{"deployment": name, "model": f"m-{name}", "auc": 0.75, "auc_drop": d, "auc_drop_ci_low": 0.0,
                          "auc_drop_ci_high": 0.002, "logloss": 0.4, "logloss_rise": d, "ece": 0.01, "mean_pctr": 0.02,
                          "observed_ctr": 0.021, "agreement": 0.99, "worst_slice": "os=ios",
                          "worst_slice_drop": 0.001, "within_gate": d <= 0.005}
                         for name, d in (("naive", 0.0), ("reasonable", 0.0), ("optimized", drop))])


def test_rtb_quality_step_and_its_gate():
    timings = pd.DataFrame({"candidate": ["baseline", "int8"], "call_us": [120.04, 40.46]})
    profile = pd.DataFrame([{"deployment": d, "stage": s, "p50_ms": 0.01, "p99_ms": 0.02, "mean_ms": 0.012345,
                             "share_of_total": 0.25, "samples": 100}
                            for d in ("naive", "optimized") for s in ("decode", "model")])
    out, printed = _out()
    rtb.show_quality(out, timings, "int8", _quality(0.001), profile)
    text = printed.getvalue()
    assert "   chosen for 'optimized': int8" in text and "40.5" in text
    assert ("   quality: AUC drop +0.0010 [target <= 0.005: ok], log-loss +0.10% [target <= +1%: ok]" in text)
    assert {"model_call_us", "quality", "profile", "profile_ms"} <= set(out.tables)
    assert list(out.tables["profile_ms"].columns) == ["deployment", "decode", "model"]
    (missed,) = rtb.quality_targets(_quality(0.02))
    assert missed["met"] is False and "[target <= 0.005: MISSED]" in missed["sentence"]


def _deployment_rows(client: str, rates: dict, rounds: int = 2) -> list[dict]:
    return [{"deployment": name, "transport": "http", "client": client, "round": r, "cold_start_s": 1.5,
             "throughput_at_sla_per_s": rate * (1 + 0.1 * r), "p99_at_sla_load_ms": 7.0, "sla_met": True,
             "note": "", "probes": 4} for r in range(rounds) for name, rate in rates.items()]


def test_rtb_in_process_step_and_ratio_targets():
    runs = pd.DataFrame(_deployment_rows("optlab", {"naive": 100.0, "reasonable": 400.0, "optimized": 2000.0}))
    out, printed = _out()
    table = rtb.show_in_process(out, runs.drop(columns=["client", "transport"]), headroom=100000.0)
    text = printed.getvalue()
    assert "median of 2 interleaved round(s)" in text
    assert "   optimized      2000/s (range 2000-2200; 2000, 2200) p99 7.00 ms in the median round" in text
    assert "   optimized / naive = 20.00x (1 round: no range)" not in text
    assert "   optimized / naive = 20.00x (range 20.00-20.00x, 2 rounds) [target >= 10x: ok]" in text
    assert "   optimized / reasonable = 5.00x (range 5.00-5.00x, 2 rounds)\n" in text  # each step shown, not judged
    assert "   reasonable / naive = 4.00x (range 4.00-4.00x, 2 rounds)\n" in text
    assert [row["met"] for row in out.target_rows] == [True, None, None]
    assert list(table.deployment) == list(rtb.DEPLOYMENTS)


def _http_rows(client: str, rates: dict, rounds: int = 2) -> list[dict]:
    return [{**row, "server": "granian" if row["deployment"].endswith("granian") else "uvicorn", "app": "lean",
             "processes": 2} for row in _deployment_rows(client, rates, rounds)]


def _splits(names, rounds: int = 2) -> pd.DataFrame:
    stages = {f"{stage}_us": 10.0 for stage in STAGES}
    return pd.DataFrame([{"deployment": name, "server": "uvicorn", "app": "lean", "round": r, **stages,
                          "in_app_us": 70.0, "http_and_socket_us": 30.0 + r, "client_mean_us": 100.0 + r,
                          "requests": 500} for r in range(rounds) for name in names])


def test_rtb_http_step_headroom_first_breakdown_both_servers_and_hey_at_the_same_rate():
    rates = {"naive": 100.0, "reasonable": 300.0, "optimized": 1000.0, "optimized-granian": 800.0}
    rows = _http_rows("wrk", rates) + _http_rows("optlab", {"naive": 100.0, "optimized": 900.0})
    rows += [{"deployment": "optimized", "server": "uvicorn", "app": "lean", "processes": 2, "client": "hey",
              "round": r, "offered_per_s": 900.0, "optlab_p99_ms": 7.0, "throughput_at_sla_per_s": 855.0,
              "p99_at_sla_load_ms": 5.0, "note": "closed loop, paced per connection"} for r in range(2)]
    runs = pd.DataFrame(rows)
    inproc = pd.DataFrame({"deployment": ["naive", "reasonable", "optimized"],
                           "throughput_at_sla_per_s": [200.0, 600.0, 2000.0]})
    out, printed = _out()
    headroom = {"wrk": 8000.0, "hey": 9000.0, "optlab": 3000.0}
    wrk_rows = rtb_http.show_over_http(out, runs, _splits(rates), headroom, inproc)
    text = printed.getvalue()
    assert text.index("client headroom") < text.index("where one request's time goes") < text.index("keeps")
    assert "flat out) 8000/s; hey (closed loop, 8 connections, flat out) 9000/s" in text
    assert "3000/s" in text
    breakdown = out.tables["http_breakdown_us"]
    assert breakdown.loc[0, "framework"] == 30.0 and breakdown.loc[0, "HTTP+sockets"] == 30.5  # median of 30, 31
    assert "keeps 50% of in process, cold start 1.5 s" in text
    assert "optimized / naive = 10.00x (range 10.00-10.00x, 2 rounds) [target >= 4x: ok]" in text
    assert "optimized / optimized-granian = 1.25x" in text
    assert "optimized  at 900/s: hey achieved / offered 0.95x" in text and "[within 20%: ok]" in text
    _no_nan(text)
    assert set(wrk_rows.deployment) == {"naive", "reasonable", "optimized"} and set(wrk_rows.transport) == {"http"}
    judged = [row for row in out.target_rows if row["met"] is not None]
    assert len(judged) == 2
    assert rtb_http.same_rate(runs[runs.client != "hey"]).empty


def test_rtb_burst_simulator_and_costs():
    summary = {"requests": 3000, "ok": 2900, "shed": 100, "shed_queue_full": 60, "shed_deadline": 40, "probes": 3,
               "timeouts": 0, "p99_ms": 14.0}
    series = pd.DataFrame({"time_s": [0.0, 1.0], "p99_ms": [4.0, math.nan], "shed": [0, 100], "ok": [50, 0]})
    out, printed = _out()
    rtb.show_burst(out, summary, series, steady=500.0, headroom=100000.0)
    text = printed.getvalue()
    assert text.startswith("4. burst 500/s -> 1500/s -> 500/s (optimized, in process): 3000 requests, ok 2900")
    assert "[p99 <= 10 ms or shed, counted: ok]" in text and "0s 4.0/0, 1s none served/100" in text
    check = {"rate_per_s": 300.0, "utilisation": 0.3, "requests": 900, "measured_p99_ms": 2.0,
             "measured_p99_ci_ms": (1.8, 2.3), "simulated_p99_ms": 2.2, "ratio": 1.1, "within_20pct": True,
             "outside_queue_p50_ms": 0.3}
    checks = [{**check, "target": True}, {**check, "utilisation": 0.7, "within_20pct": False, "target": False}]
    out, printed = _out()
    rtb.show_simulator(out, checks, headroom=100000.0)
    lines = printed.getvalue().splitlines()
    assert "(utilisation 30%" in lines[0] and lines[0].count("[within 20%: ok]") == 1
    assert "(utilisation 70%" in lines[1] and "(shown, not the target point)" in lines[1]
    assert len(out.target_rows) == 1 and out.target_rows[0]["figure"] == pytest.approx(1.1)
    inproc = pd.DataFrame({"deployment": list(rtb.DEPLOYMENTS), "throughput_at_sla_per_s": [200.0, 0.0, 2000.0],
                           "note": ""})
    both = rtb.goodputs(inproc, inproc.assign(throughput_at_sla_per_s=[100.0, 0.0, 900.0]))
    assert list(both.transport) == ["http"] * 3 + ["in_process"] * 3
    cost_table = cs.costs(both, cs.campaign(True))
    out, printed = _out()

    class NoPlan:  # the plan for a run where no deployment met the SLA over HTTP: no day simulated
        day = None

    rtb.show_costs(out, cost_table, NoPlan(), _quality(0.001))
    text = printed.getvalue()
    assert text.startswith("7. cost at the SLA throughput") and "not available" in text
    _no_nan(text)


def test_serving_offline_with_nothing_achieved_is_not_available():
    (row,) = serving.offline_targets(5000.0, 0.0, batch1_ms=2.0, policy="dynamic")
    assert row["figure"] is None and row["met"] is None and "n/a of the model's own limit" in row["sentence"]
