"""The external HTTP clients (Debian's wrk and hey) drive a real service on 127.0.0.1 and their
output is parsed into figures that agree with each other."""
from __future__ import annotations

import os

import numpy as np
import pytest

from optlab.serving.constant_service import start_constant
from optlab.serving.external_load import INSTALL, ExternalLoad, external_load, missing_tools


@pytest.fixture(scope="module")
def service():
    missing = missing_tools()
    if missing:
        message = f"{', '.join(missing)} not installed; install: {INSTALL}"
        if os.environ.get("CI"):  # `dev.py setup` installs them in CI: absent there is a broken setup
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with start_constant() as running:
        yield running


def check_consistent(summary):
    assert summary["requests"] > 0
    assert summary["ok"] + summary["non_2xx"] == summary["requests"]
    assert summary["non_2xx"] == 0  # the constant service answers 200 to everything
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["achieved_per_s"] == pytest.approx(summary["ok"] / summary["duration_s"])
    assert summary["latency_from"].startswith("send")


def test_wrk_posts_the_body_and_its_percentiles_are_parsed(service):
    result = external_load(ExternalLoad(url=service.url(), body=b'{"id": "1"}', tool="wrk", connections=4,
                                        duration_s=1))
    check_consistent(result.summary)
    assert result.summary["loop"] == "closed" and result.summary["socket_errors"] == 0
    assert 0.9 <= result.summary["duration_s"] <= 5
    latencies = result.frame.sort_values("percentile")["latency_ms"].to_numpy()
    assert np.all(np.diff(latencies) >= 0)


def test_hey_at_a_fixed_rate_sends_about_that_rate(service):
    asked = 200.0
    result = external_load(ExternalLoad(url=service.url(), body=b"{}", tool="hey", connections=4, duration_s=2,
                                        rate_per_s=asked))
    summary = result.summary
    check_consistent(summary)
    assert summary["loop"].startswith("closed, paced") and summary["offered_per_s"] == asked
    assert len(result.frame) == summary["requests"] and set(result.frame["status_code"]) == {200}
    # a paced client can only fall behind its rate, and a loaded machine delays it: within a factor of 3
    assert asked / 3 <= summary["achieved_per_s"] <= asked * 1.2


def test_bad_configs_are_refused_before_any_run():
    with pytest.raises(ValueError, match="tool='hey'"):
        ExternalLoad(url="http://127.0.0.1:1/", tool="wrk", rate_per_s=100)
    with pytest.raises(ValueError, match="whole number of seconds"):
        ExternalLoad(url="http://127.0.0.1:1/", duration_s=0.5)
    with pytest.raises(ValueError, match="unknown external load tool"):
        ExternalLoad(url="http://127.0.0.1:1/", tool="ab")
    with pytest.raises(ValueError, match="http://"):
        ExternalLoad(url="127.0.0.1:1/")


def test_wrk_cycles_through_several_bodies(service):
    bodies = tuple(f'{{"id": "{i}"}}'.encode() for i in range(5))
    result = external_load(ExternalLoad(url=service.url(), bodies=bodies, tool="wrk", connections=2, duration_s=1))
    check_consistent(result.summary)
    assert result.summary["bodies"] == 5


def test_hey_sends_varied_bodies_from_one_process_per_body_at_the_total_rate(service):
    bodies = tuple(f'{{"id": "{i}"}}'.encode() for i in range(3))
    asked = 240.0
    result = external_load(ExternalLoad(url=service.url(), bodies=bodies, tool="hey", connections=4, duration_s=2,
                                        rate_per_s=asked))
    check_consistent(result.summary)
    assert result.summary["bodies"] == 3 and any("3 hey processes" in note for note in result.notes)
    assert len(result.frame) == result.summary["requests"]
    assert asked / 3 <= result.summary["achieved_per_s"] <= asked * 1.2  # the rate is the total, not per body
