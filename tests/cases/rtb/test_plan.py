"""The capacity plan agrees with itself: its machines come from the one sizing rule, its service
times are measured over HTTP at the rate each machine carries in the plan (a real service process),
and what it prints has no inf or nan."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from optlab.cases.rtb import campaign, casestudy
from optlab.cases.rtb.deployments import OPTIMIZED, BidSchema, Deployment


@pytest.fixture(scope="module")
def case(bids_model, bids_data):
    from optlab.models import zoo

    candidate = zoo.baseline(bids_model)
    config = dataclasses.replace(OPTIMIZED, deadline_ms=None)  # the plan measures service times, not shedding
    deployment = Deployment(config, candidate, BidSchema.from_data(bids_data))
    return casestudy.Case(bids_data, deployment.schema, candidate, {}, "", {"optimized": deployment}, smoke=True)


def test_the_plan_is_sized_by_the_one_rule_and_measured_at_its_operating_point(case):
    traffic = campaign.DayTraffic(night_per_s=20, peak_per_s=100, spike_factor=2, seconds=600)
    goodputs = pd.DataFrame([{"deployment": "optimized", "transport": "http", "throughput_at_sla_per_s": 100.0,
                              "cold_start_s": 2.0, "note": ""}])
    plan = casestudy.plan_for(case, goodputs, traffic)
    assert plan.day is not None, plan.reason
    peak = float(traffic.rates().max())  # the 2x spike's ~200/s at 70% of 100/s each: 3 machines
    machines = campaign.machines_for(peak, 100.0)
    assert plan.sized_by_rule == machines == 3
    # a busy machine can miss the SLA at the rule's operating point: the plan then adds (at most two) and says so
    assert machines <= plan.machines_at_peak <= machines + 2
    if plan.machines_at_peak > machines:
        assert f"gave {machines}" in plan.describe()
    assert plan.day.summary.set_index("kind").loc["fixed", "max_replicas"] == plan.machines_at_peak
    assert plan.point.rate_per_s == pytest.approx(peak / plan.machines_at_peak)
    assert plan.point.summary["requests"] > 300 and plan.point.cpu_per_request_ms > 0
    assert plan.point.summary["client"].startswith("hey")  # the compiled client reaches the plan's rates
    assert np.isfinite(plan.simulated_p99_ms) and np.isfinite(plan.point.samples_s).all()
    text = plan.describe()
    assert not re.search(r"\b(inf|nan)\b", text, re.IGNORECASE), text
    rate = f"{peak / plan.machines_at_peak:.0f}"  # 67/s on a quiet machine (3 machines)
    assert re.search(rf"Measured there over HTTP \(hey, \d+ connections paced at {rate}/s[^)]*\): p99", text), text


def test_a_plan_without_a_throughput_at_the_sla_says_why(case):
    goodputs = pd.DataFrame([{"deployment": "optimized", "transport": "http", "throughput_at_sla_per_s": 0.0,
                              "note": "nothing meets p99 <= 10 ms: at the lowest rate tried (1,000/s) p99 14 ms"}])
    plan = casestudy.plan_for(case, goodputs, campaign.campaign(smoke=True))
    assert plan.day is None and "p99 14 ms" in plan.describe() and "not available" in plan.describe()


# The simulator is one FIFO server fed the service times measured over HTTP at the same load; a
# real service process on a shared machine, one short run (~15 answers above its p99): within 40%.
P99_TOLERANCE = 0.40


def test_the_simulator_fed_the_measured_service_times_predicts_the_measured_p99(case):
    # optlab's client: Poisson arrivals, latency from the schedule on a microsecond clock (hey, the plan's
    # default where installed, reports whole 0.1 ms steps: too coarse for this service's ~0.2 ms calls)
    point = casestudy.operating_point(case, "optimized", 150.0, requests=1500, client="optlab")
    check = point.check()
    assert 0 < check["utilisation"] < 0.9, check  # a moderate load: the queue is not saturated
    assert abs(check["simulated_over_measured"] - 1) <= P99_TOLERANCE, check
    # the check can fail: the model calls' own times (what an in-process profile sees) leave out
    # the HTTP path and predict far less than the client measured
    assert len(point.model_samples_s) > 10
    assert point.simulated_p99_ms(samples_s=point.model_samples_s) < (1 - P99_TOLERANCE) * check["measured_p99_ms"]


def test_a_plan_whose_simulator_disagrees_with_the_measurement_says_which_way():
    samples = np.full(100, 1e-3)
    point = casestudy.OperatingPoint("optimized", 500.0, samples, 0.4, 0.2, {"p99_ms": 7.5})
    day = campaign.capacity_plan(samples, 2.0, campaign.DayTraffic(seconds=600), smoke=True)
    agree = casestudy.CampaignPlan(day, point, 1000.0, 6, 8.0).describe()
    assert "1.07x the measured p99" in agree and "differ" not in agree
    high = casestudy.CampaignPlan(day, point, 1000.0, 6, 11.4).describe()
    assert "They differ by more than 25%: at this load the simulator is pessimistic" in high
    assert "seconds over the SLA are at most what this deployment would see" in high
    low = casestudy.CampaignPlan(day, point, 1000.0, 6, 4.0).describe()
    assert "simulator is optimistic" in low and "are at least what" in low


def test_service_times_survive_the_fastest_answers_rounding():
    """The fastest answer's departure is its arrival exactly: (arrival + latency) - floor rounded below
    the arrival for 267 of 100,000 random arrivals and crashed `python -m optlab.bench rtb` (session 8)."""
    from optlab.cases.rtb.plan import http_service_times
    from optlab.serving.loadgen import LoadResult

    arrivals = np.random.default_rng(0).random(100_000) * 10
    requests = pd.DataFrame({"status": "ok", "scheduled_s": arrivals, "latency_ms": 12.3456789})
    samples, floor = http_service_times(LoadResult({}, requests, pd.DataFrame()))
    assert floor == pytest.approx(0.0123456789) and len(samples) == len(arrivals) and (samples >= 1e-6).all()


def test_a_machine_over_the_sla_at_its_own_operating_point_gets_company(case, monkeypatch):
    """The rule sizes from a throughput measured with a closed loop; where the measured p99 at the
    plan's own per-machine rate is over the SLA, the plan adds machines until it holds and says so
    (the fixed fleet of the simulated day is the plan's, not the rule's)."""
    from optlab.cases.rtb import plan as plans

    measured = []

    def point(case_, name, rate_per_s, **_):
        measured.append(rate_per_s)  # stands in for a run whose p99 grows with the load (0.12 ms per request/s)
        return plans.OperatingPoint(name, rate_per_s, np.full(200, 2e-3), 0.5, 0.5,
                                    {"p99_ms": 0.12 * rate_per_s, "requests": 1000, "shed": 0})

    monkeypatch.setattr(plans, "operating_point", point)
    traffic = campaign.DayTraffic(night_per_s=20, peak_per_s=100, spike_factor=2, seconds=600)
    peak = float(traffic.rates().max())
    goodputs = pd.DataFrame([{"deployment": "optimized", "transport": "http", "throughput_at_sla_per_s": peak,
                              "cold_start_s": 2.0, "note": ""}])
    plan = casestudy.plan_for(case, goodputs, traffic)
    assert plan.sized_by_rule == campaign.machines_for(peak, peak) == 2
    assert plan.machines_at_peak == 3 and measured == pytest.approx([peak / 2, peak / 3])
    assert plan.day.summary.set_index("kind").loc["fixed", "max_replicas"] == 3
    text = plan.describe()
    assert "The sizing rule (70% of that throughput) gave 2" in text and "over the 10 ms SLA even so" not in text
