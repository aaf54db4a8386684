"""forward_rows: a batch of rows of different lengths (left padding, per-row positions, attention mask)
gives each row what running it alone gives."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.decode import forward_rows, greedy_alone


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@torch.inference_mode()
def alone_logits(model, tokens: list[int]) -> torch.Tensor:
    return model(torch.tensor([tokens])).logits[0]


def test_prefill_of_rows_of_different_lengths_matches_each_row_alone():
    model = tiny_llama()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    rows = forward_rows(model, [None] * 3, prompts)
    for prompt, row in zip(prompts, rows, strict=True):
        assert row.logits.shape == (len(prompt), 96)
        torch.testing.assert_close(row.logits, alone_logits(model, prompt), atol=1e-5, rtol=1e-5)
        assert row.new_kv[0][0].shape == (2, len(prompt), 8)  # kv heads, tokens, head dim
        assert len(row.new_kv) == 2


def test_mixed_step_rows_with_different_pasts_and_new_token_counts():
    """One row decodes a token, one feeds a chunk of two, one prefills from scratch: all exact."""
    model = tiny_llama(3)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10]]
    pasts = [row.new_kv for row in forward_rows(model, [None, None], prompts)] + [None]
    news = [[5], [6, 7], [20, 21, 22, 23]]
    rows = forward_rows(model, pasts, news)
    for prompt, new, row in zip(prompts + [[]], news, rows, strict=True):
        expected = alone_logits(model, prompt + new)[-len(new):]
        torch.testing.assert_close(row.logits, expected, atol=1e-5, rtol=1e-5)


def test_right_padding_would_corrupt_the_short_row():
    """The mechanism's reason: in a right-padded batch the short row's next-token prediction is not in the
    last column, and the token it appends at the batch's next step lands after the pads and sees them."""
    model = tiny_llama()
    short, pads, nxt = [1, 2, 3], [0, 0, 0, 0], [42]
    assert not torch.allclose(alone_logits(model, short + pads)[-1], alone_logits(model, short)[-1], atol=1e-3)
    assert not torch.allclose(alone_logits(model, short + pads + nxt)[-1], alone_logits(model, short + nxt)[-1],
                              atol=1e-3)


def test_greedy_alone_equals_recomputing_the_prefix_every_token():
    model = tiny_llama(1)
    ids = [7, 8, 9]
    for _ in range(12):
        ids.append(int(alone_logits(model, ids)[-1].argmax()))
    assert greedy_alone(model, [7, 8, 9], 12) == ids[3:]


def test_rows_without_new_tokens_are_refused():
    with pytest.raises(ValueError, match="at least one new token"):
        forward_rows(tiny_llama(), [None, None], [[1], []])
