"""What the load clients could drive: a figure near optlab's generator's headroom is said to be the
client's limit; wrk measures a real service process; an absent tool reads 'not available' with
the install line, never inf or nan."""
from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from optlab.cases.rtb import casestudy, clients
from optlab.cases.rtb.deployments import OPTIMIZED, BidSchema, Deployment

UNREADABLE = re.compile(r"\b(inf|nan)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def case(bids_model, bids_data):
    from optlab.models import zoo

    candidate = zoo.baseline(bids_model)
    deployment = Deployment(OPTIMIZED, candidate, BidSchema.from_data(bids_data))
    return casestudy.Case(bids_data, deployment.schema, candidate, {}, "", {"optimized": deployment}, smoke=True)


def _over_http(optimized_per_s: float) -> pd.DataFrame:
    return pd.DataFrame([{"deployment": "optimized", "throughput_at_sla_per_s": optimized_per_s, "note": ""},
                         {"deployment": "constant", "throughput_at_sla_per_s": 3000.0, "note": ""}])


def test_a_figure_above_half_the_generators_headroom_is_called_the_clients_limit():
    headroom = pd.DataFrame([{"client": "optlab generator (Python, open loop)", "headroom_per_s": 3000.0, "note": ""}])
    near = clients.headroom_note(headroom, _over_http(2000.0))
    assert "optimized is one, so the service may do better than it shows" in near
    far = clients.headroom_note(headroom, _over_http(500.0))
    assert "none is, so they are the services' own" in far and "3,000/s" in far


def test_without_wrk_every_figure_says_not_available_and_how_to_install(case, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    headroom = clients.client_headroom(_over_http(500.0))
    external = clients.external_at_sla(case)
    shown = casestudy.readable(pd.concat([headroom, external], ignore_index=True)).to_string()
    assert "wrk is not installed" in shown and "apt-get install" in shown
    assert not UNREADABLE.search(shown) and not UNREADABLE.search(clients.headroom_note(headroom, _over_http(500.0)))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk absent: the test above covers what a person then reads")
def test_wrk_measures_a_real_service_process_and_its_own_headroom(case):
    external = clients.external_at_sla(case).iloc[0]
    assert external["deployment"] == "optimized" and external["connections"] >= 1
    if external["rate_at_sla_per_s"] > 0:  # a busy machine may fail the SLA on one connection: then it says why
        assert external["p99_ms"] <= casestudy.SLA_MS and external["note"] == ""
    else:
        assert external["note"].startswith("not available: p99")
    headroom = clients.client_headroom(_over_http(500.0)).set_index("client")["headroom_per_s"]
    assert headroom.iloc[1] > 0
