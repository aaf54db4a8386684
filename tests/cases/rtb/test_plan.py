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
    assert plan.machines_at_peak == machines == 3
    assert plan.day.summary.set_index("kind").loc["fixed", "max_replicas"] == machines
    assert plan.point.rate_per_s == pytest.approx(peak / machines)
    assert plan.point.summary["requests"] > 300 and plan.point.cpu_per_request_ms > 0
    assert np.isfinite(plan.simulated_p99_ms) and np.isfinite(plan.point.samples_s).all()
    text = plan.describe()
    assert not re.search(r"\b(inf|nan)\b", text, re.IGNORECASE), text
    assert "Measured there over HTTP: p99" in text


def test_a_plan_without_a_throughput_at_the_sla_says_why(case):
    goodputs = pd.DataFrame([{"deployment": "optimized", "transport": "http", "throughput_at_sla_per_s": 0.0,
                              "note": "nothing meets p99 <= 10 ms: at the lowest rate tried (1,000/s) p99 14 ms"}])
    plan = casestudy.plan_for(case, goodputs, campaign.campaign(smoke=True))
    assert plan.day is None and "p99 14 ms" in plan.describe() and "not available" in plan.describe()
