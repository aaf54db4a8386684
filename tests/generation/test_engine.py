"""SequentialEngine: the KV-cached greedy baseline equals greedy decoding by full recomputation, serves
requests first come first served, and refuses bad requests before any work."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.engine import KvBytes, SequentialEngine, TokenEvent, kv_bytes_per_token, run_to_completion


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@torch.inference_mode()
def greedy_by_recompute(model, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_sequential_engine_equals_recomputed_greedy_and_serves_fifo():
    model = tiny_llama()
    engine = SequentialEngine(model)
    engine.add("a", [5, 6, 7], 6)
    engine.add("b", [1, 2, 3, 4, 9, 11], 4)
    order = []
    outputs: dict[str, list[int]] = {}
    while engine.has_work():
        events = engine.step()
        assert len(events) == 1 and isinstance(events[0], TokenEvent)
        order.append(events[0].request_id)
        outputs.setdefault(events[0].request_id, []).append(events[0].token)
        assert events[0].finished == (len(outputs[events[0].request_id]) == {"a": 6, "b": 4}[events[0].request_id])
    assert order == ["a"] * 6 + ["b"] * 4
    assert outputs["a"] == greedy_by_recompute(model, [5, 6, 7], 6)
    assert outputs["b"] == greedy_by_recompute(model, [1, 2, 3, 4, 9, 11], 4)
    assert engine.step() == [] and not engine.has_work()


def test_eos_ends_a_request_early():
    model = tiny_llama(1)
    first = greedy_by_recompute(model, [3, 4], 5)
    engine = SequentialEngine(model, eos_token_id=first[1])
    engine.add("r", [3, 4], 5)
    out = run_to_completion(engine)
    assert out["r"] == first[: first.index(first[1]) + 1]


def test_kv_bytes_track_the_sequence_in_flight():
    model = tiny_llama()
    engine = SequentialEngine(model)
    assert engine.kv_bytes() == KvBytes(0, 0)
    engine.add("r", [1, 2, 3], 3)
    engine.step()
    per_token = kv_bytes_per_token(model)
    assert per_token == 2 * 2 * 2 * 8 * 4  # k and v, 2 layers, 2 kv heads, head_dim 8, fp32
    assert engine.kv_bytes() == KvBytes(3 * per_token, 3 * per_token)
    engine.step()
    assert engine.kv_bytes().used == 4 * per_token
    engine.step()
    assert engine.kv_bytes() == KvBytes(0, 0)


@pytest.mark.parametrize("args, match", [
    (("x", [], 3), "empty prompt"),
    (("x", [1], 0), "at least 1"),
    (("x", [96], 2), "token ids"),
    (("x", [1] * 250, 10), "positions"),
])
def test_bad_requests_are_refused_before_work(args, match):
    engine = SequentialEngine(tiny_llama())
    with pytest.raises(ValueError, match=match):
        engine.add(*args)
    assert not engine.has_work()


def test_duplicate_request_id_is_refused():
    engine = SequentialEngine(tiny_llama())
    engine.add("x", [1, 2], 2)
    with pytest.raises(ValueError, match="already"):
        engine.add("x", [3], 2)
