"""The load generator against a service of known cost (time.sleep releases the interpreter lock)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from optlab.serving import loadgen
from optlab.serving.policies import Admission, NoBatching
from optlab.serving.queueing import lindley_waits, pollaczek_khinchine_wait
from optlab.serving.schedules import Burst, Closed, Gamma, Poisson, Replay, arrivals, read_trace
from optlab.serving.server import Server

SERVICE_S = 0.005
PAYLOADS = [{"x": np.zeros((1, 4), np.float32)}]


def sleepy(batch):
    time.sleep(SERVICE_S)
    return batch["x"]


def disturbance(result) -> float:
    """How much a busy machine disturbed a run of the sleep service: the service's coefficient of
    variation (a quiet sleep(5 ms) varies by ~1%) plus the generator's p99 lateness in ms / 10."""
    frame = result.requests
    return float(frame.service_ms.std() / frame.service_ms.mean() + frame.send_lag_ms.quantile(0.99) / 10)


@pytest.fixture(scope="module")
def mg1_run():
    """One worker at 50% load, >= 2,000 requests (~20 s): used by the Lindley and P-K checks. On a shared
    machine another tenant can stall a run; a visibly disturbed run is measured once more and the
    quieter of the two is kept (every figure is still from a real run of the same seeded arrivals)."""
    runs = []
    for _ in range(2):
        runs.append(loadgen.run(Server(sleepy, NoBatching()), PAYLOADS, Poisson(100, duration_s=21), seed=0))
        if disturbance(runs[-1]) < 0.2:
            break
    return min(runs, key=disturbance)


def test_each_wait_matches_a_lindley_replay_of_the_same_arrivals(mg1_run):
    """The server's queue against the recursion: the seeded arrivals as they reached the server
    (scheduled + the generator's lag + the pipe's transport) and the measured service times replay
    each request's wait in the queue. The generator's own delay, a property of the machine and not
    of the queue, is bounded on its own (it is part of every reported latency)."""
    frame = mg1_run.requests.sort_values("scheduled_s")
    assert len(frame) >= 2000 and (frame.status == "ok").all()
    delay_ms = (frame.send_lag_ms + frame.transport_ms).to_numpy()
    arrival_ms = frame.scheduled_s.to_numpy() * 1e3 + delay_ms
    order = np.argsort(arrival_ms, kind="stable")  # served in the order they arrived
    replayed = lindley_waits(arrival_ms[order], frame.service_ms.to_numpy()[order])
    queue_wait_ms = (frame.wait_ms.to_numpy() - delay_ms)[order]
    error = np.abs(queue_wait_ms - replayed)
    assert np.median(error) <= 0.1 * frame.service_ms.mean(), f"median error {np.median(error):.3f} ms"
    assert np.median(delay_ms) <= 0.2 * frame.service_ms.mean(), f"generator delay {np.median(delay_ms):.3f} ms"


def test_mean_wait_at_half_load_matches_pollaczek_khinchine(mg1_run):
    frame = mg1_run.requests
    service_s = frame.service_ms.to_numpy() / 1e3
    span_s = frame.scheduled_s.max() - frame.scheduled_s.min()
    rate = (len(frame) - 1) / span_s
    expected_s = pollaczek_khinchine_wait(rate, service_s.mean(), service_s.var())
    # the queue's own wait starts when the request reaches the server; the generator's lateness (its send
    # lag, large only when a busy machine stalls it) is checked on its own
    waits_s = (frame.sort_values("scheduled_s").eval("wait_ms - send_lag_ms - transport_ms")).to_numpy() / 1e3
    measured_s = waits_s.mean()
    # waits in a queue are correlated: the mean's standard error from 20 batch means (not from the rows)
    batch_means = np.array([chunk.mean() for chunk in np.array_split(waits_s, 20)])
    standard_error_s = batch_means.std(ddof=1) / np.sqrt(len(batch_means))
    assert frame.send_lag_ms.median() < 0.5
    assert 0.4 <= rate * service_s.mean() <= 0.6
    assert abs(measured_s - expected_s) <= 0.05 * expected_s + 3 * standard_error_s, \
        f"mean wait {measured_s * 1e3:.3f} ms vs P-K {expected_s * 1e3:.3f} ms (standard error " \
        f"{standard_error_s * 1e3:.3f} ms)"
    assert mg1_run.summary["p99_ci_low_ms"] <= mg1_run.summary["p99_ms"] <= mg1_run.summary["p99_ci_high_ms"]


def test_throughput_saturates_at_workers_over_service_time():
    result = loadgen.run(Server(sleepy, NoBatching(), workers=2, cores=2), PAYLOADS,
                         Poisson(1000, duration_s=1.5), saturation_s=2.0)
    capacity = 2 / (result.requests.service_ms.mean() / 1e3)  # a sleep overshoots a little: use what it took
    assert 0.85 * capacity <= result.summary["achieved_per_s"] <= 1.03 * capacity, result
    assert result.summary["offered_per_s"] == 1000


def test_over_saturation_stops_early_and_says_so():
    result = loadgen.run(Server(sleepy, NoBatching()), PAYLOADS, Poisson(1000, duration_s=20), saturation_s=0.5)
    assert result.summary["stopped_early"] and "over-saturated" in result.summary["stop_reason"]
    # stopped within 8 s of the run's own clock (from its first scheduled arrival), not the 20 s asked: the
    # test's wall clock also counted the generator process's start, which a busy machine stretches
    assert result.requests["scheduled_s"].max() < 8 and result.summary["requests"] < 8 * 1000
    assert result.summary["requests"] == result.summary["ok"] + result.summary["timeouts"] + result.summary["shed"]


def test_deadline_shedding_counts_add_up_under_overload():
    server = Server(sleepy, NoBatching(), admission=Admission(queue_limit=20, deadline_ms=30))
    result = loadgen.run(server, PAYLOADS, Poisson(400, duration_s=1.0))
    s = result.summary
    assert s["shed"] > 0 and s["ok"] > 0 and not s["stopped_early"]
    assert s["requests"] == s["ok"] + s["shed_queue_full"] + s["shed_deadline"] + s["errors"] + s["timeouts"]
    # what is served started in time (a stall of a shared machine in mid-call can still overrun a little)
    assert s["p99_ms"] <= 30 + 4 * SERVICE_S * 1e3


def test_a_failing_model_ends_the_run_with_its_error_count():
    def broken(batch):
        raise ValueError("weights missing")
    result = loadgen.run(Server(broken, NoBatching()), PAYLOADS, Poisson(200, duration_s=0.5))
    assert result.summary["errors"] == result.summary["requests"] > 0
    assert any("failed inside the model" in note for note in result.notes)


def test_closed_loop_keeps_its_concurrency():
    result = loadgen.run(Server(sleepy, NoBatching()), PAYLOADS, Closed(3, duration_s=1.0))
    capacity = 1 / (result.requests.service_ms.mean() / 1e3)
    assert 0.75 * capacity <= result.summary["achieved_per_s"] <= 1.03 * capacity
    assert result.summary["p50_ms"] >= 2.5 * SERVICE_S * 1e3  # two requests ahead of each one


def test_poisson_gaps_pass_a_distribution_test():
    times = arrivals(Poisson(500, duration_s=10), seed=3)
    gaps = np.diff(times)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 500)).pvalue > 0.01
    assert abs(len(times) / 10 / 500 - 1) < 0.05


def test_gamma_burstiness_sets_the_spread_of_gaps():
    for burstiness in (0.25, 1.0, 4.0):
        gaps = np.diff(arrivals(Gamma(1000, burstiness=burstiness, duration_s=20), seed=1))
        cv = gaps.std() / gaps.mean()
        assert abs(cv / (1 / np.sqrt(burstiness)) - 1) < 0.1
        assert abs(gaps.mean() * 1000 - 1) < 0.05


def test_burst_raises_the_rate_for_its_window():
    times = arrivals(Burst(200, peak_factor=4, steady_s=2, burst_s=1, after_s=2), seed=0)
    rate = lambda lo, hi: ((times >= lo) & (times < hi)).sum() / (hi - lo)  # noqa: E731
    assert 3.0 <= rate(2, 3) / rate(0, 2) <= 5.0 and 0.7 <= rate(3, 5) / rate(0, 2) <= 1.4


def test_replay_reads_a_trace_and_refuses_bad_ones(tmp_path):
    trace = tmp_path / "trace.txt"
    trace.write_text("10.0\n10.1\n10.25\n")
    np.testing.assert_allclose(read_trace(trace), [0, 0.1, 0.25])
    np.testing.assert_allclose(arrivals(Replay(str(trace), speed=2.0)), [0, 0.05, 0.125])
    result = loadgen.run(Server(sleepy, NoBatching()), PAYLOADS, Replay(str(trace)))
    assert result.summary["ok"] == 3
    np.testing.assert_allclose(result.requests.scheduled_s, [0, 0.1, 0.25], atol=1e-6)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_trace(tmp_path / "empty.txt")
    (tmp_path / "unsorted.txt").write_text("1\n3\n2\n")
    with pytest.raises(ValueError, match="not sorted.*line 3"):
        read_trace(tmp_path / "unsorted.txt")


def test_loads_the_generator_cannot_produce_are_refused():
    with pytest.raises(ValueError, match="more than this generator can produce"):
        loadgen.run(Server(sleepy), PAYLOADS, Poisson(5e6, duration_s=1))
    with pytest.raises(ValueError, match="> 0"):
        Poisson(0)


def test_series_counts_every_request_once():
    result = loadgen.run(Server(sleepy, NoBatching()), PAYLOADS, Poisson(100, duration_s=1.0), series_bin_s=0.25)
    assert result.series["sent"].sum() == result.summary["requests"]
    assert result.series["ok"].sum() == result.summary["ok"]


def test_a_closed_loop_with_many_clients_is_not_called_over_saturated():
    result = loadgen.run(Server(lambda b: b["x"], NoBatching()), PAYLOADS, Closed(300, duration_s=0.5))
    assert not result.summary["stopped_early"] and result.summary["ok"] > 300


def test_generator_headroom_walks_past_a_failing_low_rate(monkeypatch):
    """A low rate can fail on an idle machine (wake-ups) where higher ones pass: the headroom is the
    highest passing rate on the ladder, and the search stops after two failures in a row."""
    from optlab.serving import loadgen as module

    p99_by_rate = {500: 1.2, 1000: 0.4, 2000: 0.5, 4000: 0.9, 8000: 1.5, 16000: 2.5, 32000: 0.3}

    class Fake:
        def __init__(self, rate):
            self.summary = {"p99_ms": p99_by_rate[int(rate)], "stopped_early": False, "ok": 700, "requests": 700,
                            "offered_per_s": rate}

    monkeypatch.setattr(module, "run", lambda server, payloads, load, seed=0: Fake(load.rate_per_s))
    monkeypatch.setattr(module, "noop_server", lambda: None)
    best, curve = module.generator_headroom(sla_ms=10.0, start_per_s=500.0, max_per_s=64_000, refine=0)
    assert best == 4000
    assert list(curve["offered_per_s"]) == [500, 1000, 2000, 4000, 8000, 16000]  # 32000 never probed


def test_generator_headroom_bisects_between_the_doubling_grids_points(monkeypatch):
    """Past the doubling, bisection narrows the headroom to within 9% of the true limit (here 6,000/s)."""
    from optlab.serving import loadgen as module

    class Fake:
        def __init__(self, rate):
            self.summary = {"p99_ms": 0.5 if rate <= 6000 else 3.0, "stopped_early": False, "ok": 700,
                            "requests": 700, "offered_per_s": rate}

    monkeypatch.setattr(module, "run", lambda server, payloads, load, seed=0: Fake(load.rate_per_s))
    monkeypatch.setattr(module, "noop_server", lambda: None)
    best, curve = module.generator_headroom(sla_ms=10.0, start_per_s=500.0, max_per_s=64_000, refine=3)
    assert 6000 / 1.09 <= best <= 6000
    assert len(curve) == 6 + 3 and curve["offered_per_s"].is_monotonic_increasing
