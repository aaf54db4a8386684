"""LoadGen's token-latency mode referees the generation server: on an engine whose step times are
known (real sleeps), LoadGen's TTFT and TPOT come out near them and near optlab's own figures."""
from __future__ import annotations

import time

import pytest

from optlab.generation.engine import TokenEvent
from optlab.generation.referee import agreement, loadgen_generation_run, referee_rounds
from optlab.generation.trace import TraceSpec, poisson_trace
from optlab.instruments.generation import Sla

pytest.importorskip("mlperf_loadgen")

PREFILL_S, DECODE_S = 0.006, 0.003


class SleepingEngine:
    """One request at a time; a prefill sleeps PREFILL_S and yields the first token, a decode DECODE_S."""

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


def _trace(n=40):
    return poisson_trace(TraceSpec(rate_per_s=20.0, requests=n, output_tokens=(4, 8), seed=1))


def test_loadgen_times_first_tokens_and_output_tokens_of_a_known_engine():
    row = loadgen_generation_run(SleepingEngine(), _trace(), target_qps=20.0, sla=Sla(ttft_ms=500, tpot_ms=50))
    # a sleep is never shorter than asked; a busy machine makes it longer, never by a factor of 3 at p50
    assert PREFILL_S * 1e3 <= row["ttft_p50_ms"] < 3 * PREFILL_S * 1e3
    assert DECODE_S * 1e3 <= row["tpot_p50_ms"] < 3 * DECODE_S * 1e3
    assert row["achieved_per_s"] > 0 and row["output_tokens_per_s"] > row["achieved_per_s"]
    assert row["result"] in ("VALID", "INVALID")
    assert row["valid"] or row["why_invalid"]  # 40 queries are too few for LoadGen's early-stopping test


def test_interleaved_rounds_report_both_sides_and_a_sentence():
    rows = referee_rounds(SleepingEngine, _trace(30), rate_per_s=20.0, rounds=2, sla=Sla(ttft_ms=500, tpot_ms=50))
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert r["arrivals"] == 30  # optlab's generator replayed every query LoadGen issued
        # both clocks see the same sleeps and the same arrivals: the TPOT medians agree closely
        assert 0.7 < r["tpot_p50_ms_ratio"] < 1.4
        assert r["optlab_ttft_p50_ms"] >= PREFILL_S * 1e3
    sentence = agreement(rows)
    assert "TPOT p50 optlab/LoadGen" in sentence and "LoadGen" in sentence
    if not any(r["loadgen_valid"] for r in rows):
        assert "TTFT p99: not available" in sentence


def test_bad_rates_and_empty_traces_are_refused_before_loadgen_starts():
    with pytest.raises(ValueError, match="target_qps must be > 0"):
        loadgen_generation_run(SleepingEngine(), _trace(), target_qps=0)
    with pytest.raises(ValueError, match="at least one request"):
        loadgen_generation_run(SleepingEngine(), [], target_qps=5)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        referee_rounds(SleepingEngine, _trace(), rate_per_s=5, rounds=0)
