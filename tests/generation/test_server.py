"""The generation server and its metrics: known step times are recovered; a real engine's tokens
come back unchanged through the server."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.engine import KvBytes, SequentialEngine, TokenEvent, run_to_completion
from optlab.generation.server import FakeClock, GenerationServer, GoodputSearch, goodput_at_sla
from optlab.generation.trace import TraceRequest, TraceSpec, at_rate, poisson_trace
from optlab.instruments.generation import Sla

PREFILL_MS, DECODE_MS = 40.0, 7.0


class SleepingEngine:
    """One request at a time; a prefill step takes PREFILL_MS and yields the first token, each decode
    step DECODE_MS, on a fake clock: the TTFT and TPOT it should produce are known exactly."""

    def __init__(self, clock: FakeClock):
        self.clock, self.queue, self.current, self.left = clock, [], None, 0

    def add(self, request_id, prompt_ids, max_new_tokens):
        self.queue.append((request_id, max_new_tokens))

    def has_work(self):
        return self.current is not None or bool(self.queue)

    def step(self):
        if self.current is None:
            self.current, self.left = self.queue.pop(0)
            self.clock.advance(PREFILL_MS * 1e6)
        else:
            self.clock.advance(DECODE_MS * 1e6)
        self.left -= 1
        event = TokenEvent(self.current, 7, self.left == 0)
        if self.left == 0:
            self.current = None
        return [event]

    def kv_bytes(self):
        return KvBytes(reserved=1000, used=250)


def _serve(rate, spaced=False):
    clock = FakeClock()
    trace = poisson_trace(TraceSpec(rate_per_s=rate, requests=60, output_tokens=(4, 20), seed=3))
    if spaced:  # one arrival a second; a request takes < 0.2 s: nothing ever queues
        trace = [TraceRequest(r.request_id, float(i), r.prompt_ids, r.max_new_tokens) for i, r in enumerate(trace)]
    return GenerationServer(SleepingEngine(clock), clock=clock).run(trace, sla=Sla(ttft_ms=100, tpot_ms=10),
                                                                    n_boot=200)


def test_known_step_times_are_recovered_within_5_percent():
    summary = _serve(rate=1.0, spaced=True).summary
    assert summary["completed"] == 60
    for key in ("ttft_p50_ms", "ttft_p99_ms"):
        assert summary[key] == pytest.approx(PREFILL_MS, rel=0.05)
    for key in ("tpot_p50_ms", "tpot_p99_ms", "itl_p50_ms", "itl_p99_ms"):
        assert summary[key] == pytest.approx(DECODE_MS, rel=0.05)
    assert summary["good_requests"] == 60
    assert summary["kv_cache_reserved_mb"] == pytest.approx(0.001)
    assert summary["kv_cache_unused_share"] == pytest.approx(0.75)


def test_queueing_shows_in_ttft_not_tpot():
    summary = _serve(rate=20.0).summary  # a request takes ~0.12 s on average: arrivals outrun it
    assert summary["ttft_p99_ms"] > 5 * PREFILL_MS  # waited behind others, counted from the scheduled arrival
    assert summary["tpot_p50_ms"] == pytest.approx(DECODE_MS, rel=0.05)
    assert summary["good_requests"] < 60


def test_real_engine_tokens_pass_through_the_server_unchanged():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    trace = poisson_trace(TraceSpec(rate_per_s=200.0, requests=5, prompt_tokens=(3, 9), output_tokens=(2, 6)))
    seen: dict[str, list[int]] = {}
    result = GenerationServer(SequentialEngine(model)).run(
        trace, n_boot=50, on_token=lambda rid, tok, t: seen.setdefault(rid, []).append(tok))
    reference = SequentialEngine(model)
    for r in trace:
        reference.add(r.request_id, list(r.prompt_ids), r.max_new_tokens)
    assert seen == run_to_completion(reference)
    assert result.summary["completed"] == 5 and not result.stopped_early
    assert result.summary["kv_cache_used_mb"] > 0


def test_retimed_trace_keeps_requests_and_bad_input_is_refused():
    trace = poisson_trace(TraceSpec(rate_per_s=5.0, requests=10))
    faster = at_rate(trace, 50.0)
    assert [r.prompt_ids for r in faster] == [r.prompt_ids for r in trace]
    assert faster[-1].arrival_s < trace[-1].arrival_s
    with pytest.raises(ValueError, match="rate_per_s"):
        TraceSpec(rate_per_s=0)
    with pytest.raises(TypeError, match="not an Engine"):
        GenerationServer(object())
    with pytest.raises(ValueError, match="tpot_ms"):
        Sla(tpot_ms=-1)


def test_goodput_search_finds_the_rate_where_queueing_breaks_the_ttft_limit():
    def make_server():
        clock = FakeClock()
        return GenerationServer(SleepingEngine(clock), clock=clock, saturation_s=5.0)

    trace = poisson_trace(TraceSpec(rate_per_s=1.0, requests=80, output_tokens=(10, 10), seed=1))
    # one request occupies the engine for 40 + 9 * 7 = 103 ms: it saturates near 9.7/s
    search = GoodputSearch(sla=Sla(ttft_ms=200, tpot_ms=10), min_requests=80, start_per_s=1.0, rel_tol=0.1)
    result = goodput_at_sla(make_server, trace, search)
    assert 1.0 <= result.goodput_per_s < 9.7
    assert result.at_best["ttft_p99_ms"] <= 200 and result.at_best["tpot_p99_ms"] <= 10
    assert result.curve["passed"].any() and not result.curve["passed"].all()
    tight = goodput_at_sla(make_server, trace, GoodputSearch(sla=Sla(ttft_ms=200, tpot_ms=5), min_requests=80,
                                                             min_per_s=0.5))
    assert tight.goodput_per_s == 0 and "TPOT p99 7 ms" in tight.notes[0]


class WallSleepingEngine:
    """One request at a time with real sleeps: a prefill 5 ms (the first token), each decode 2 ms."""

    def __init__(self):
        self.queue, self.current, self.left = [], None, 0

    def add(self, request_id, prompt_ids, max_new_tokens):
        self.queue.append((request_id, max_new_tokens))

    def has_work(self):
        return self.current is not None or bool(self.queue)

    def step(self):
        import time
        if self.current is None:
            self.current, self.left = self.queue.pop(0)
            time.sleep(0.005)
        else:
            time.sleep(0.002)
        self.left -= 1
        event = TokenEvent(self.current, 7, self.left == 0)
        if self.left == 0:
            self.current = None
        return [event]


def test_goodput_search_driven_by_the_load_generators_process():
    trace = poisson_trace(TraceSpec(rate_per_s=1.0, requests=60, output_tokens=(4, 4), seed=2))
    # one request holds the engine >= 5 + 3 * 2 = 11 ms: it sustains at most ~91/s; a finite trace
    # can outrun it a little, but at 120/s the last of 60 requests already waits ~160 ms (> 100 ms)
    search = GoodputSearch(sla=Sla(ttft_ms=100, tpot_ms=10), min_requests=60, start_per_s=20.0, rel_tol=0.25,
                           max_probes=7, driver="process")
    result = goodput_at_sla(lambda: GenerationServer(WallSleepingEngine()), trace, search)
    assert 20.0 <= result.goodput_per_s < 120
    assert 2.0 <= result.at_best["tpot_p99_ms"] <= 10 and result.at_best["ttft_p99_ms"] >= 5.0
    assert result.at_best["engine"] == "WallSleepingEngine" and result.at_best["completed"] == 60
    with pytest.raises(ValueError, match="unknown driver"):
        GoodputSearch(driver="carrier-pigeon")


def test_fail_fast_stops_a_probe_once_its_ttft_p99_is_missed_for_certain_and_changes_no_verdict():
    """All 64 requests at once to a one-at-a-time engine (103 ms each): the third waits 246 ms for its first
    token, over 200 ms with the two after it; the run stops there, and a search finds the same goodput with
    and without stopping early, in less simulated time."""
    from optlab.instruments.generation import CertainMiss

    at_once = [TraceRequest(f"r{i}", 0.0, (1, 2), 10) for i in range(64)]
    sla = Sla(ttft_ms=200, tpot_ms=10)
    clock = FakeClock()
    stopped = GenerationServer(SleepingEngine(clock), clock=clock).run(
        at_once, sla=sla, n_boot=20, fail_fast=CertainMiss.of(sla, 64))
    assert stopped.stopped_early.startswith("stopped early: ") and "more than 200 ms" in stopped.stopped_early
    assert stopped.summary["completed"] <= 2 and clock.now_ns() < 0.5e9
    clock = FakeClock()
    whole = GenerationServer(SleepingEngine(clock), clock=clock).run(at_once, sla=sla, n_boot=20)
    assert whole.stopped_early == "" and whole.summary["ttft_p99_ms"] > 200  # the whole run misses it too
    spaced = [TraceRequest(f"s{i}", float(i), (1, 2), 10) for i in range(60)]  # nothing queues; 7 ms per token
    clock = FakeClock()
    paced = GenerationServer(SleepingEngine(clock), clock=clock).run(
        spaced, n_boot=20, fail_fast=CertainMiss.of(Sla(ttft_ms=200, tpot_ms=5), 60))
    assert "are over TPOT 5 ms" in paced.stopped_early and clock.now_ns() < 1.2e9  # the second request settles it

    clocks: list[FakeClock] = []

    def make_server():
        clocks.append(FakeClock())
        return GenerationServer(SleepingEngine(clocks[-1]), clock=clocks[-1], saturation_s=5.0)

    trace = poisson_trace(TraceSpec(rate_per_s=1.0, requests=80, output_tokens=(10, 10), seed=1))
    found = {}
    for fail_fast in (False, True):
        clocks.clear()
        search = GoodputSearch(sla=sla, min_requests=80, start_per_s=1.0, rel_tol=0.1, fail_fast=fail_fast)
        result = goodput_at_sla(make_server, trace, search)
        found[fail_fast] = (result.goodput_per_s, result.curve["passed"].tolist(), sum(c.now_ns() for c in clocks))
    assert found[True][:2] == found[False][:2]  # the same probes pass and fail: the same goodput
    assert found[True][2] < found[False][2]  # in less (simulated) time
