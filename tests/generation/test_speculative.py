"""Greedy speculative decoding returns the target's own greedy output token for token, whatever the draft:
with a random draft that often disagrees, and with draft == target (acceptance 1.0)."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.decode import greedy_alone
from optlab.generation.engine import KvBytes, run_to_completion
from optlab.generation.speculative import SpeculativeEngine, speculative_generate


def tiny_llama(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def target():
    return tiny_llama(0)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_random_draft_gives_the_targets_greedy_output(target, k):
    draft = tiny_llama(9, layers=1)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    tokens, stats = speculative_generate(target, draft, prompt, 30, k=k)
    assert tokens == greedy_alone(target, prompt, 30)
    assert stats.tokens == 30 and stats.accepted < stats.proposed  # the random draft does disagree
    assert 1.0 <= stats.tokens_per_target_call <= k + 1
    assert stats.target_calls < 30 or stats.accepted == 0


def test_draft_equal_to_target_accepts_everything(target):
    tokens, stats = speculative_generate(target, target, [7, 7, 8], 21, k=4)
    assert tokens == greedy_alone(target, [7, 7, 8], 21)
    assert stats.acceptance_rate == 1.0
    assert stats.target_calls == 1 + 4  # the prefill, then 4 rounds of k + 1 = 5 tokens each
    assert stats.tokens_per_target_call == 21 / 5


def test_eos_stops_speculation_at_the_same_token(target):
    plain = greedy_alone(target, [2, 3], 20)
    eos = plain[5]
    tokens, _ = speculative_generate(target, tiny_llama(4, 1), [2, 3], 20, k=3, eos_token_id=eos)
    assert tokens == plain[: plain.index(eos) + 1]


def test_speculative_engine_serves_requests_in_order_with_the_same_outputs(target):
    engine = SpeculativeEngine(target, tiny_llama(9, layers=1), k=3)
    engine.add("a", [1, 2, 3], 12)
    engine.add("b", [9, 8, 7, 6], 9)
    assert engine.kv_bytes() == KvBytes(0, 0)
    first = engine.step()
    assert [e.request_id for e in first] == ["a"] and engine.kv_bytes().used > 0
    outputs = run_to_completion(engine)
    assert [first[0].token] + outputs["a"] == greedy_alone(target, [1, 2, 3], 12)
    assert outputs["b"] == greedy_alone(target, [9, 8, 7, 6], 9)
    assert engine.stats.target_calls >= 2 and engine.kv_bytes() == KvBytes(0, 0)


def test_bad_arguments_are_refused(target):
    with pytest.raises(ValueError, match="k=0"):
        SpeculativeEngine(target, target, k=0)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match="vocabularies"):
        SpeculativeEngine(target, other)
