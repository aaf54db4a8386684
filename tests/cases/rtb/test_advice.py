"""The advice a person reads: no inf or nan when nothing met the SLA (the reason instead), and a plan
that is over the SLA longer than another is never chosen without saying so."""
from __future__ import annotations

import re
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from optlab.cases.rtb import advice, campaign
from optlab.serving.server import Server
from optlab.serving.sla import SlaSearch, server_probe, throughput_at_sla

UNREADABLE = re.compile(r"\b(inf|nan)\b|\$inf|nan%", re.IGNORECASE)


def _slow_model(inputs):
    time.sleep(0.03)  # a real 30 ms service: no rate can meet p99 <= 10 ms
    return np.zeros(len(next(iter(inputs.values()))), np.float32)


def _quality() -> pd.DataFrame:
    return pd.DataFrame([{"deployment": "optimized", "auc": 0.71, "auc_drop": 0.001, "mean_pctr": 0.03,
                          "observed_ctr": 0.031}])


@pytest.fixture(scope="module")
def missed():
    """A real search against a real server that cannot meet the SLA."""
    search = SlaSearch(max_p99_ms=10.0, probe_s=0.2, start_per_s=50.0, max_probes=1, confirm_failures=0)
    requests = [{"x": np.zeros((1, 2), np.float32)}] * 50
    result = throughput_at_sla(server_probe(lambda: Server(_slow_model), requests, search), search)
    return {"throughput_at_sla_per_s": result.throughput_per_s, "p99_at_sla_load_ms": result.p99_ms,
            "note": "; ".join(result.notes)}


def test_a_search_nothing_meets_says_why(missed):
    assert missed["throughput_at_sla_per_s"] == 0
    assert "at the lowest rate tried" in missed["note"] and "busy or the SLA too tight" in missed["note"]
    assert re.search(r"p99 \d", missed["note"])


def test_costs_and_advice_say_not_available_with_the_reason(missed):
    goodputs = pd.DataFrame([{**missed, "deployment": name, "transport": "in_process"}
                             for name in ("naive", "reasonable", "optimized")])
    table = campaign.costs(goodputs, campaign.campaign(smoke=True))
    assert table["cost_per_month_usd"].isna().all() and not np.isinf(table.select_dtypes("number")).any().any()
    assert table["note"].str.startswith("not available: nothing meets p99 <= 10 ms").all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        text = advice.recommendation(table, None, _quality())
    assert not UNREADABLE.search(text), text
    assert "not available" in text and "busy or the SLA too tight" in text


def test_a_first_version_without_figures_leaves_no_inf_in_the_saving(missed):
    goodputs = pd.DataFrame([{**missed, "deployment": "naive", "transport": "in_process"},
                             {"deployment": "optimized", "transport": "in_process", "throughput_at_sla_per_s": 2000.0,
                              "note": ""}])
    text = advice.recommendation(campaign.costs(goodputs, campaign.campaign(smoke=True)), None, _quality())
    assert not UNREADABLE.search(text), text
    assert "saving against it is not available" in text and "answers 99% of bid requests within 10 ms (p99)" in text


def _plans(reactive_over_s: int, reactive_shed: float) -> pd.DataFrame:
    base = {"served": 0, "cost_per_month_usd": 100.0}
    return pd.DataFrame([
        {**base, "policy": "fixed(7)", "kind": "fixed", "shed_rate": 0.0, "seconds_over_sla": 0,
         "requests_in_seconds_over_sla": 0.0, "cost_per_month_usd": 400.0},
        {**base, "policy": "reactive(2-14)", "kind": "reactive", "shed_rate": reactive_shed,
         "seconds_over_sla": reactive_over_s, "requests_in_seconds_over_sla": reactive_over_s / 1440},
        {**base, "policy": "scale-to-zero", "kind": "scale_to_zero", "shed_rate": 0.02, "seconds_over_sla": 30,
         "requests_in_seconds_over_sla": 0.02, "cost_per_month_usd": 90.0},
    ])


def test_a_plan_over_the_sla_longer_is_not_picked_on_shed_rate_alone():
    # the reactive plan sheds nothing but is over the SLA for two thirds of the day
    ranked = advice.rank_plans(_plans(950, 0.0))
    assert ranked.iloc[0]["kind"] == "fixed"
    text = advice.plan_advice(_plans(950, 0.0), bids_per_month=1e9)
    assert text.startswith("For the launch, run it with fixed(7)") and "missed bids a month" in text


def test_when_the_chosen_plan_is_over_the_sla_longer_the_text_says_so():
    plans = _plans(5, 0.0)
    plans.loc[0, ["shed_rate", "requests_in_seconds_over_sla"]] = [0.01, 0.0]  # fixed sheds 1%: more bids at risk
    text = advice.plan_advice(plans, bids_per_month=1e9, value_per_1000_bids_usd=0.05)
    assert text.startswith("For the launch, run it with reactive(2-14)")
    assert "fixed(7) is over the SLA for less of the day (0 s) but puts more bids at risk" in text
    assert "(about 0 missed bids a month, worth $0" in text


def test_a_table_for_a_person_reads_not_available_where_a_figure_is_missing():
    from optlab.cases.rtb import casestudy

    frame = pd.DataFrame({"deployment": ["optimized"], "p99_at_sla_load_ms": [float("nan")], "cold_start_s": [2.5]})
    shown = casestudy.readable(frame)
    assert shown.loc[0, "p99_at_sla_load_ms"] == "not available" and shown.loc[0, "cold_start_s"] == 2.5
    assert not UNREADABLE.search(shown.to_string()) and frame["p99_at_sla_load_ms"].isna().all()


def test_a_table_for_a_person_reads_not_available_where_a_figure_is_infinite():
    from optlab.cases.rtb import casestudy

    frame = pd.DataFrame({"deployment": ["naive"], "cost_per_million_bids_usd": [float("inf")], "workers": [1]})
    shown = casestudy.readable(frame)
    assert shown.loc[0, "cost_per_million_bids_usd"] == "not available" and shown.loc[0, "workers"] == 1
    assert not UNREADABLE.search(shown.to_string())


def test_bids_in_seconds_over_the_sla_are_counted_with_their_least_value():
    plans = _plans(950, 0.0).iloc[[1]]  # the reactive plan alone: over the SLA for 950 s
    text = advice.plan_advice(plans, bids_per_month=1e9, value_per_1000_bids_usd=0.05)
    late = float(plans["requests_in_seconds_over_sla"].iloc[0]) * 1e9
    assert f"Another {late:,.0f} bids a month arrive in seconds whose p99 is over 10 ms" in text
    assert f"(worth at least ${0.01 * late * 0.05 / 1e3:,.0f} a month)" in text


def test_interleaved_rounds_keep_the_median_round_not_the_best():
    from optlab.cases.rtb import casestudy

    runs = pd.DataFrame({"deployment": ["naive", "optimized"] * 3, "round": [0, 0, 1, 1, 2, 2],
                         "throughput_at_sla_per_s": [100.0, 900.0, 300.0, 2500.0, 200.0, 1200.0]})
    kept = casestudy.median_rounds(runs).set_index("deployment")
    assert kept.loc["naive", "throughput_at_sla_per_s"] == 200.0 and kept.loc["optimized", "round"] == 2
    assert kept.loc["optimized", "rounds_per_s"] == "900, 2500, 1200"
    with pytest.warns(DeprecationWarning, match="median_rounds"):
        assert casestudy.best_rounds(runs).set_index("deployment").loc["optimized", "throughput_at_sla_per_s"] == 2500


def test_a_search_still_within_the_sla_at_its_highest_probe_is_a_lower_bound():
    """Smoke searches on a busy machine stopped at their highest probe for both deployments (1,000/s
    each), and the advice read "0% less with the optimized one": a lower bound says "at least" and no
    saving follows from it."""
    traffic = campaign.campaign(smoke=True)
    bound = "still within the SLA at the highest load probed (1000/s): a lower bound"
    both = pd.DataFrame([{"deployment": name, "transport": "in_process", "throughput_at_sla_per_s": 1000.0,
                          "note": bound} for name in ("naive", "optimized")])
    table = campaign.costs(both, traffic)
    assert (table["note"] == campaign.LOWER_BOUND).all()
    text, sized = advice.serving_advice(table)
    assert sized and "at least 1,000 requests per second" in text and "needs at most" in text
    assert "saving against it is not known" in text and "% less" not in text
    exact_naive = both.assign(throughput_at_sla_per_s=[100.0, 1000.0], note=["", bound])
    text, _ = advice.serving_advice(campaign.costs(exact_naive, traffic))
    assert re.search(r"at least \d+% less with the optimized one", text), text
