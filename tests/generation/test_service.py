"""The load generator's process drives a generation engine: a sleeping engine with known step times
gives TTFT and TPOT back within 5%, a real tiny Llama's answers come back whole, and a failing engine
answers every request 'error' instead of hanging the run."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.engine import SequentialEngine, TokenEvent
from optlab.generation.service import GenerationService, drive
from optlab.generation.trace import TraceSpec, poisson_trace
from optlab.instruments.generation import CertainMiss, Sla

PREFILL_S, DECODE_S = 0.040, 0.010


class SleepingEngine:
    """One request at a time: a prefill sleeps PREFILL_S and yields the first token, a decode DECODE_S."""

    def __init__(self):
        self.queue, self.current, self.left = [], None, 0

    def add(self, request_id, prompt_ids, max_new_tokens):
        self.queue.append((request_id, max_new_tokens))

    def has_work(self):
        return self.current is not None or bool(self.queue)

    def step(self):
        if self.current is None:
            self.current, self.left = self.queue.pop(0)
            time.sleep(PREFILL_S)
        else:
            time.sleep(DECODE_S)
        self.left -= 1
        event = TokenEvent(self.current, 7, self.left == 0)
        if self.left == 0:
            self.current = None
        return [event]


class Failing(SleepingEngine):
    def step(self):
        raise RuntimeError("kernel exploded")


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def _trace(n=12, tokens=(6, 6)):
    return poisson_trace(TraceSpec(rate_per_s=5.0, requests=n, output_tokens=tokens, seed=3))


def test_the_generator_process_recovers_known_first_token_and_per_token_times():
    trace = _trace()
    offsets = np.arange(len(trace)) * 0.15  # one request every 150 ms: each finds the engine idle
    result = drive(SleepingEngine(), trace, offsets, sla=Sla(ttft_ms=500, tpot_ms=50))
    s, frame = result.summary, result.requests
    assert s["ok"] == len(trace) and (frame["output_tokens"] == 6).all()
    # within 5%: a sleep is never shorter than asked; the send, the loop's wake-up and the sleep's own
    # overshoot add a fraction of a millisecond
    assert PREFILL_S * 1e3 <= s["ttft_p50_ms"] <= 1.05 * PREFILL_S * 1e3
    assert DECODE_S * 1e3 <= s["tpot_p50_ms"] <= 1.05 * DECODE_S * 1e3
    assert (frame["ttft_ms"] <= frame["latency_ms"]).all()
    assert s["output_tokens"] == 6 * len(trace) and s["good_requests"] == len(trace)
    assert s["goodput_per_s"] == pytest.approx(len(trace) / s["duration_s"])


def test_a_queue_behind_one_request_shows_in_ttft_not_in_tpot():
    trace = _trace(4)
    result = drive(SleepingEngine(), trace, np.arange(len(trace)) * 1e-3)  # all four at once, served in turn
    ttft = np.sort(result.requests["ttft_ms"].to_numpy())
    service_ms = 1e3 * (PREFILL_S + 5 * DECODE_S)
    assert ttft[-1] >= 3 * service_ms  # the fourth waited for three whole requests
    assert result.summary["tpot_p99_ms"] < 2 * DECODE_S * 1e3


def test_a_real_engine_answers_every_request_whole():
    trace = poisson_trace(TraceSpec(rate_per_s=20.0, requests=6, output_tokens=(3, 5), seed=0))
    result = drive(SequentialEngine(tiny_llama()), trace, [r.arrival_s for r in trace])
    frame = result.requests.sort_values("request_id")
    assert (frame["status"] == "ok").all()
    assert frame["output_tokens"].tolist() == [r.max_new_tokens for r in trace]


def test_a_bad_request_is_answered_error_and_the_others_are_served():
    trace = poisson_trace(TraceSpec(rate_per_s=20.0, requests=3, output_tokens=(2, 2), seed=0))
    bad = type(trace[0])("bad", 0.0, (500,), 2)  # a token id outside the vocabulary
    result = drive(SequentialEngine(tiny_llama()), [*trace, bad], [0.0, 0.01, 0.02, 0.03], indices=[0, 3, 1, 2])
    assert result.summary["errors"] == 1 and result.summary["ok"] == 3


def test_a_failing_engine_answers_error_and_says_why():
    trace = _trace(3)
    result = drive(Failing(), trace, [0.0, 0.05, 0.1], drain_s=5.0)
    assert result.summary["errors"] == 3 and result.summary["ok"] == 0
    assert any("kernel exploded" in note for note in result.notes)


def test_bad_calls_are_refused_before_anything_runs():
    with pytest.raises(TypeError, match="is not an Engine"):
        GenerationService(object())
    with pytest.raises(ValueError, match="one per arrival"):
        drive(SleepingEngine(), _trace(), [0.0, 0.1], indices=[0])
    with pytest.raises(ValueError, match="at least one arrival"):
        drive(SleepingEngine(), _trace(), [])


def test_an_engine_that_cannot_keep_up_ends_the_run_early_and_says_so():
    trace = _trace(10)
    started = time.monotonic()
    result = drive(SleepingEngine(), trace, np.arange(10) * 1e-3, saturation_s=0.2)  # ~0.09 s each, one at a time
    assert result.summary["stopped_early"] and "over-saturated" in result.summary["stop_reason"]
    assert 1 <= result.summary["ok"] < 10 and result.summary["timeouts"] >= 1
    assert time.monotonic() - started < 0.9 + 2.0  # not the ~0.9 s the backlog needs plus a drain's wait


def test_fail_fast_ends_the_run_once_enough_requests_missed_the_ttft_limit_for_certain():
    trace = _trace(10)  # one at a time, ~0.09 s each: the third request waits ~0.18 s for its first token
    result = drive(SleepingEngine(), trace, np.arange(10) * 1e-3, fail_fast=CertainMiss(Sla(100.0, 50.0), 2))
    assert result.summary["stopped_early"] and result.summary["stop_reason"].startswith("stopped early: ")
    assert "waited more than 100 ms for their first token" in result.summary["stop_reason"]
    assert 1 <= result.summary["ok"] < 10 and result.summary["timeouts"] >= 1
    calm = drive(SleepingEngine(), trace, np.arange(10) * 0.2, fail_fast=CertainMiss(Sla(100.0, 50.0), 2))  # no queue
    assert not calm.summary["stopped_early"] and calm.summary["completed"] == 10
    paced = drive(SleepingEngine(), trace, np.arange(10) * 0.2, fail_fast=CertainMiss(Sla(1000.0, 5.0), 2))
    assert paced.summary["stopped_early"] and "are over TPOT 5 ms" in paced.summary["stop_reason"]  # 10 ms a token
