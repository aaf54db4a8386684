"""The capacity simulator: request level against Erlang C, fleet level against its own bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest

from optlab.cases.rtb.campaign import DayTraffic
from optlab.serving.capacity import (
    Fixed,
    Reactive,
    Replica,
    ScaleToZero,
    erlang_c_wait,
    simulate_day,
    simulate_waits,
)
from optlab.serving.queueing import lindley_services, lindley_waits


@pytest.mark.parametrize("utilisation", [0.5, 0.8])
def test_mmc_mean_wait_matches_erlang_c(utilisation):
    servers, mean_service, n = 4, 1.0, 200_000
    rate = utilisation * servers / mean_service
    rng = np.random.default_rng(7)
    waits = simulate_waits(rng.exponential(1 / rate, n), rng.exponential(mean_service, n), servers)
    measured = waits[n // 20:].mean()  # drop the empty-system start
    expected = erlang_c_wait(rate, mean_service, servers)
    assert abs(measured / expected - 1) <= 0.10, (measured, expected)


def test_erlang_c_single_server_is_mm1():
    # M/M/1: Wq = rho / (mu - lambda)
    assert erlang_c_wait(0.5, 1.0, 1) == pytest.approx(0.5 / (1 - 0.5))
    with pytest.raises(ValueError, match="utilisation"):
        erlang_c_wait(5.0, 1.0, 4)


def _replica():
    return Replica.measured(np.random.default_rng(0).gamma(4.0, 0.25e-3, 500), cold_start_s=20.0,
                            price_per_hour_usd=0.5)


def test_day_counts_every_request_and_bills_replica_hours():
    replica = _replica()  # ~1 ms per request: ~1000/s per replica
    traffic = DayTraffic(night_per_s=50, peak_per_s=400, spike_factor=3, seconds=1200)
    result = simulate_day(replica, traffic, [Fixed(1), Reactive(1, 8, interval_s=5, cooldown_s=30),
                                             ScaleToZero(max_replicas=8, idle_after_s=60)], table_n=4000)
    s = result.summary.set_index("kind")
    total = int(traffic.counts(0).sum())
    for kind in s.index:
        assert s.loc[kind, "arrivals"] == total
        assert abs(s.loc[kind, "served"] + s.loc[kind, "shed"] - total) <= 2  # the rest is the last backlog
    # one fixed replica all day: 24 replica-hours per (full) day
    assert s.loc["fixed", "replica_hours_per_day"] == pytest.approx(24.0)
    assert s.loc["fixed", "cost_per_month_usd"] == pytest.approx(0.5 * 730)  # one replica, a 730-hour month
    # a 3x spike over ~400/s is more than one replica (~1000/s) can do: the fixed plan sheds, counted
    assert s.loc["fixed", "shed"] > 0
    assert s.loc["reactive", "max_replicas"] > 1
    assert s.loc["reactive", "shed"] < s.loc["fixed", "shed"]
    # a second with arrivals and no replica ready is counted, never an inf in the summary
    assert np.isfinite(result.summary.select_dtypes("number").to_numpy(float)).all()
    assert s.loc["fixed", "seconds_without_replica"] == 0
    # scale-to-zero starts with nothing: its first requests wait a cold start and are shed
    series = result.series[result.series["policy"] == s.loc["scale_to_zero", "policy"]]
    assert series["shed"].iloc[0] == series["arrivals"].iloc[0] > 0


def test_bad_inputs_say_what_to_fix():
    with pytest.raises(ValueError, match="service-time samples"):
        Replica.measured([0.001] * 3)
    with pytest.raises(ValueError, match="scale_down_at"):
        Reactive(scale_up_at=0.3, scale_down_at=0.5)
    with pytest.raises(TypeError, match="scaling policy"):
        simulate_day(_replica(), DayTraffic(seconds=60), ["fixed"], table_n=1000)


def test_lindley_services_inverts_the_queue_a_fifo_server_replays():
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(1.0, 2000))
    service = rng.gamma(2.0, 0.35, 2000)  # utilisation ~0.7: long busy periods and idle gaps
    departures = arrivals + lindley_waits(arrivals, service) + service
    np.testing.assert_allclose(lindley_services(arrivals, departures), service, rtol=1e-9, atol=1e-9)
    # two answers leaving together (one batch): the first one out carries the batch's time
    np.testing.assert_allclose(lindley_services(np.array([0.0, 0.1]), np.array([1.0, 1.0])), [1.0, 0.0])
    with pytest.raises(ValueError, match="departure before its arrival"):
        lindley_services(np.array([1.0]), np.array([0.5]))
