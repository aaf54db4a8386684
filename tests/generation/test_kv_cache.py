"""KV cache vs recomputation: the logits that choose every greedy token agree at every position, and the
timing table has the shape the benchmark prints (no timing target here: the machine is shared)."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.kv_cache import speedup_at, stepwise_logits, time_per_token


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("seed, prompt", [(0, [1, 2, 3]), (5, list(range(10, 40)))])
def test_cached_and_recomputed_logits_agree_at_every_position(seed, prompt):
    model = tiny_llama(seed)
    cached = stepwise_logits(model, prompt, 40, use_cache=True)
    recomputed = stepwise_logits(model, prompt, 40, use_cache=False)
    assert cached.shape == recomputed.shape == (40, 96)
    torch.testing.assert_close(cached, recomputed, atol=1e-4, rtol=1e-4)
    assert torch.equal(cached.argmax(-1), recomputed.argmax(-1))


def test_time_per_token_table():
    table = time_per_token(tiny_llama(), [1, 2, 3, 4], 6, repeats=2)
    assert list(table.columns) == ["mode", "position", "ms_per_token", "repeats"]
    assert sorted(set(table["mode"])) == ["cache", "recompute"]
    assert table.groupby("mode").position.apply(list).tolist() == [list(range(4, 10))] * 2
    assert (table.ms_per_token > 0).all() and table.ms_per_token.map(math.isfinite).all()
    assert speedup_at(table, 9) > 0
    with pytest.raises(ValueError, match="position 99"):
        speedup_at(table, 99)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="non-empty prompt"):
        time_per_token(tiny_llama(), [], 3)
