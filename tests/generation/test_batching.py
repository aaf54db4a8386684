"""Static and continuous batching return, for every request, exactly the tokens decoding it alone returns
(greedy), with requests arriving at different steps and of different lengths; and the policies differ the
way they should (continuous admits mid-batch, static makes newcomers wait)."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.batching import ContinuousBatchEngine, StaticBatchEngine
from optlab.generation.decode import greedy_alone
from optlab.generation.engine import KvBytes, kv_bytes_per_token


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


# (arrival step, request id, prompt, max_new_tokens): different lengths, arriving while others run
TRACE = [
    (0, "a", [1, 2, 3], 9),
    (0, "b", [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], 3),
    (1, "c", [15], 7),
    (3, "d", [16, 17, 18, 19, 20], 5),
    (4, "e", [21, 22], 1),
    (9, "f", list(range(30, 52)), 6),
]


def drive(engine, trace=TRACE):
    """Add each request at its arrival step and step until done; outputs and the step each request started."""
    outputs: dict[str, list[int]] = {}
    first_step: dict[str, int] = {}
    step = 0
    pending = list(trace)
    while pending or engine.has_work():
        while pending and pending[0][0] <= step:
            _, rid, prompt, n = pending.pop(0)
            engine.add(rid, prompt, n)
        for event in engine.step():
            outputs.setdefault(event.request_id, []).append(event.token)
            first_step.setdefault(event.request_id, step)
            assert event.finished == (len(outputs[event.request_id]) == dict((r, n) for _, r, _, n in trace)[
                event.request_id])
        step += 1
    return outputs, first_step


@pytest.fixture(scope="module")
def model():
    return tiny_llama(2)


@pytest.fixture(scope="module")
def alone(model):
    return {rid: greedy_alone(model, prompt, n) for _, rid, prompt, n in TRACE}


@pytest.mark.parametrize("kwargs", [dict(max_batch=8), dict(max_batch=2), dict(max_batch=4, prefill_chunk=4)])
def test_continuous_batching_equals_each_request_alone(model, alone, kwargs):
    engine = ContinuousBatchEngine(model, **kwargs)
    outputs, first_step = drive(engine)
    assert outputs == alone
    assert engine.kv_bytes() == KvBytes(0, 0)


def test_continuous_admits_mid_batch_static_waits(model, alone):
    cont_out, cont_first = drive(ContinuousBatchEngine(model, max_batch=8))
    static = StaticBatchEngine(model, max_batch=8)
    stat_out, stat_first = drive(static)
    assert stat_out == alone
    assert cont_first["c"] == 1  # joins the running batch at its arrival step
    assert stat_first["c"] > stat_first["a"] + 8  # waits until a (9 tokens) and b are both done
    assert static.kv_bytes() == KvBytes(0, 0)


def test_static_reserves_the_padded_rectangle(model):
    engine = StaticBatchEngine(model, max_batch=4)
    engine.add("x", [1, 2, 3], 2)
    engine.add("y", [1, 2, 3, 4, 5, 6], 10)
    engine.step()
    per = kv_bytes_per_token(model)
    assert engine.kv_bytes() == KvBytes(reserved=2 * (6 + 10) * per, used=(3 + 6) * per)


def test_contiguous_budget_limits_concurrency_and_outputs_stay_exact(model, alone):
    per = kv_bytes_per_token(model)
    engine = ContinuousBatchEngine(model, max_batch=8, kv_budget_bytes=30 * per)
    outputs, _ = drive(engine)
    assert outputs == alone
    engine.add("z", [1], 3)
    engine.add("w", [2] * 20, 8)  # 4 + 28 > 30: only one fits at a time
    engine.step()
    assert len(engine.running) == 1 and engine.kv_bytes().reserved <= 30 * per


def test_requests_that_can_never_fit_are_refused_at_add(model):
    per = kv_bytes_per_token(model)
    with pytest.raises(ValueError, match="kv_budget_bytes"):
        ContinuousBatchEngine(model, kv_budget_bytes=10 * per).add("big", [1] * 8, 8)
    with pytest.raises(ValueError, match="reserve_tokens"):
        ContinuousBatchEngine(model, reserve_tokens=12).add("big", [1] * 8, 8)
    with pytest.raises(ValueError, match="max_batch"):
        ContinuousBatchEngine(model, max_batch=0)


def test_every_engine_gives_the_same_tokens_with_eos(model, alone):
    """All engines on one trace, with an end-of-sequence token that cuts some requests short."""
    from optlab.generation.engine import SequentialEngine
    from optlab.generation.paged import PagedEngine
    from optlab.generation.speculative import SpeculativeEngine

    eos = alone["a"][4]
    expected = {rid: out[: out.index(eos) + 1] if eos in out else out for rid, out in alone.items()}
    assert len(expected["a"]) == alone["a"].index(eos) + 1 < len(alone["a"])  # eos does cut a request short
    per = kv_bytes_per_token(model)
    engines = [SequentialEngine(model, eos_token_id=eos),
               StaticBatchEngine(model, max_batch=3, eos_token_id=eos),
               ContinuousBatchEngine(model, max_batch=3, prefill_chunk=5, eos_token_id=eos),
               PagedEngine(model, kv_budget_bytes=12 * 4 * per, block_size=4, eos_token_id=eos),
               SpeculativeEngine(model, tiny_llama(8), k=3, eos_token_id=eos)]
    for engine in engines:
        pending, outputs, step = list(TRACE), {}, 0
        while pending or engine.has_work():
            while pending and pending[0][0] <= step:
                _, rid, prompt, n = pending.pop(0)
                engine.add(rid, prompt, n)
            for event in engine.step():
                outputs.setdefault(event.request_id, []).append(event.token)
            step += 1
        assert outputs == expected, type(engine).__name__
        assert engine.kv_bytes() == KvBytes(0, 0)
