"""The timing loop and its statistics, checked on recorded synthetic samples (no wall clock
in the assertions)."""
import numpy as np
import pytest

from optlab.bench.measure import TRUE_P50_MS, TRUE_P99_MS, draw_latencies_ms
from optlab.instruments import timing
from optlab.instruments.timing import (
    bootstrap_quantile_ci,
    first_of_each_shape,
    is_stable,
    quantile_ci_order_stats,
    summarize,
    time_calls,
    warmup_settled,
)


def test_summarize_recovers_injected_mixture_quantiles():
    samples_ns = (draw_latencies_ms(20_000, seed=1) * 1e6).astype(np.int64)
    stats = summarize(samples_ns, n_boot=300)
    assert stats.samples == 20_000
    assert stats.p50_ms == pytest.approx(TRUE_P50_MS, rel=0.02)
    assert stats.p99_ms == pytest.approx(TRUE_P99_MS, rel=0.05)
    assert stats.p50_ci_low_ms <= stats.p50_ms <= stats.p50_ci_high_ms
    assert stats.p99_ci_low_ms <= stats.p99_ms <= stats.p99_ci_high_ms
    assert stats.p99_ci_low_ms <= TRUE_P99_MS <= stats.p99_ci_high_ms
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms
    assert stats.mean_ms == pytest.approx(samples_ns.mean() / 1e6)
    assert stats.std_ms == pytest.approx(samples_ns.std(ddof=1) / 1e6)
    assert not stats.noisy


def test_small_tailed_sample_is_flagged_noisy():
    samples_ns = (draw_latencies_ms(150, seed=2) * 1e6).astype(np.int64)
    assert summarize(samples_ns, n_boot=200).noisy
    assert summarize(np.full(500, 1_000_000), n_boot=100).noisy is False


def test_summarize_of_nothing_is_none_and_is_deterministic():
    assert summarize([]) is None
    samples = (draw_latencies_ms(1000) * 1e6).astype(np.int64)
    assert summarize(samples, seed=3) == summarize(samples, seed=3)


def test_bootstrap_interval_covers_the_true_median_of_a_normal():
    values = np.random.default_rng(0).normal(10.0, 1.0, 4000)
    (low, high), = bootstrap_quantile_ci(values, (0.5,), n_boot=400)
    assert low < 10.0 < high and high - low < 0.2


def test_order_statistic_interval_brackets_the_quantile():
    ordered = np.arange(1000, dtype=float)
    low, high = quantile_ci_order_stats(ordered, 0.5)
    assert low < 500 < high and high - low < 100
    assert quantile_ci_order_stats(ordered[:5], 0.99) == (3.0, 4.0)


def test_stability_rule():
    assert is_stable(np.full(200, 1000), 0.1)
    assert not is_stable((draw_latencies_ms(120, seed=4) * 1e6).astype(np.int64), 0.1)


def test_time_calls_stop_reasons_and_sample_count():
    batches = [np.zeros(1)]
    run = time_calls(lambda b: b, batches, warmup=3, min_samples=10, max_samples=50, budget_s=60, rel_ci=1e-9)
    assert (run.stop_reason, len(run.samples_ns), run.warmup) == ("max_samples", 50, 3)
    assert run.samples_ns.dtype == np.int64 and (run.samples_ns >= 0).all()
    run = time_calls(lambda b: b, batches, min_samples=10, max_samples=100_000, budget_s=60, rel_ci=0.99)
    assert run.stop_reason in ("stable", "max_samples") and run.complete
    run = time_calls(lambda b: sum(range(1000)), batches, min_samples=5, max_samples=10**7, budget_s=0.01)
    assert run.stop_reason == "budget" and len(run.samples_ns) >= 1


def test_time_calls_cycles_batches_and_checks_warmup_outputs():
    seen, checked = [], []
    time_calls(seen.append, [1, 2, 3], warmup=2, min_samples=4, max_samples=4, budget_s=60,
               check=lambda out, batch: checked.append(batch))
    assert seen == [1, 2, 1, 2, 3, 1] and checked == [1, 2]


def test_time_calls_keeps_samples_on_keyboard_interrupt():
    calls = {"n": 0}

    def predict(batch):
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt

    run = time_calls(predict, [0], warmup=2, min_samples=100, max_samples=1000, budget_s=60)
    assert run.stop_reason == "interrupted" and not run.complete and len(run.samples_ns) == 10


def test_time_calls_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one batch"):
        time_calls(lambda b: b, [])
    with pytest.raises(ValueError, match="min_samples"):
        time_calls(lambda b: b, [0], min_samples=10, max_samples=5)


def test_harness_overhead_sanity_bound():
    run = time_calls(lambda b: None, [None], warmup=10, min_samples=2000, max_samples=2000, budget_s=60)
    assert np.median(run.samples_ns) < 100_000  # 100 us: a loose bound that never flakes


def test_synced_loop_calls_sync_around_each_call():
    events = []
    run = time_calls(lambda b: events.append("call"), [0], warmup=1, min_samples=3, max_samples=3, budget_s=60,
                     sync=lambda: events.append("sync"), warmup_max_s=0.0)
    # the fixed warm-up call, then the (cut-short) auto warm-up window, then 3 timed calls, each synced both sides
    assert events[:2] == ["call", "sync"] and events[-9:] == ["sync", "call", "sync"] * 3
    assert events[2:-9] == ["sync", "call", "sync"] * (run.warmup - 1) and run.warmup_settled is False


def test_warmup_settled_rule_on_recorded_window_medians():
    ramp = [3000, 2200, 1500, 1100, 1010, 1000, 1005]  # clocks ramping up, then flat (ns)
    assert not any(warmup_settled(ramp[:n]) for n in range(7))
    assert warmup_settled(ramp)
    assert not warmup_settled([1000, 1000]) and not warmup_settled([0, 0, 0])
    assert not warmup_settled([1000, 1100, 1000], rel_tol=0.05) and warmup_settled([1000, 1100, 1000], rel_tol=0.2)


class FakeClock:
    """A perf counter that moves only when the code under test spends time: each call's duration is
    what the test says it is, so a busy machine cannot stretch a call or blur a window's median."""

    def __init__(self):
        self.now_ns = 1_000_000_000

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)

    def perf_counter_ns(self) -> int:
        return self.now_ns

    def perf_counter(self) -> float:
        return self.now_ns / 1e9


def test_auto_warmup_runs_until_a_slow_start_has_passed(monkeypatch):
    # A call that starts slow and speeds up over its first 60 calls (a GPU's clocks ramping from
    # idle), then holds: a fixed 10-call warm-up would time the ramp; the auto warm-up must run past it.
    # The durations run on a fake perf counter: on a loaded machine a busy-wait's wall time is the
    # scheduler's, and the window medians never agreed within WARMUP_REL_TOL before warmup_max_s.
    clock = FakeClock()
    monkeypatch.setattr(timing, "time", clock)
    calls = {"n": 0}

    def predict(batch):
        calls["n"] += 1
        clock.advance(max(0.001, 0.007 - 0.0001 * calls["n"]))

    run = time_calls(predict, [0], warmup="auto", min_samples=20, max_samples=20, budget_s=60)
    assert run.warmup > 60 and run.warmup_settled is True and run.warmup_s >= 0.2
    assert len(run.samples_ns) == 20 and calls["n"] == run.warmup + 20
    assert set(run.samples_ns.tolist()) == {1_000_000}  # every timed call is past the ramp
    fixed = time_calls(lambda b: None, [0], warmup=10, min_samples=5, max_samples=5, budget_s=60)
    assert fixed.warmup == 10 and fixed.warmup_settled is None  # CPU default: a fixed count, unchanged


def test_warmup_rejects_bad_values():
    with pytest.raises(ValueError, match="warmup="):
        time_calls(lambda b: b, [0], warmup="soon")
    with pytest.raises(ValueError, match="warmup="):
        time_calls(lambda b: b, [0], warmup=-1)


def test_warmup_visits_every_input_shape_before_timing():
    """Eager runtimes pay a first call per new shape (per-batch padding gives many): every shape
    is called once in the warm-up, so none of those first calls is timed."""
    batches = [{"ids": np.zeros((1, length), np.int64)} for length in (8, 8, 16, 8, 32, 64, 16, 128)]
    calls = []
    run = time_calls(lambda batch: calls.append(batch["ids"].shape[1]), batches, warmup=2, min_samples=5,
                     max_samples=20, budget_s=0.5)
    assert sorted(set(calls[:run.warmup])) == [8, 16, 32, 64, 128]
    assert run.warmup == 2 + 4  # two plain warm-up calls (both length 8), then 16, 32, 64 and 128 once each
    assert first_of_each_shape(batches) == [0, 2, 4, 5, 7]
