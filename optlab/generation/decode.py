"""The incremental decode step for a batch of sequences of different lengths: one forward pass that feeds
each row its new tokens (a whole prompt, a chunk of one, or the single token of a decode step) on top of
that row's cached keys/values, and returns each row's logits and the keys/values of its new tokens.

Why this is the heart of every scheduler. Generation is prefill (the prompt in one pass, filling the KV
cache) then one token per pass, reusing the cache. Batching many sequences into one pass is what makes a
server fast, but sequences in a batch have different lengths. Three things must be right per row:
- **positions**: rotary embeddings encode each token's position in *its own* sequence, so every row gets
  its own `position_ids` (row i's new tokens sit at past_i, past_i + 1, ...), never the batch column index;
- **padding on the left**: rows are aligned on their *last* token. Each row's cached part is left-padded
  to the batch's longest past, and its new tokens are left-padded to the batch's most new tokens, so the
  last column is always a real token (its logits are the next-token prediction) and the causal mask in
  padded coordinates never lets a real token see a later one. Right padding would put pad tokens *after*
  short rows' real tokens and their next-token logits in a different column per row; a decode step that
  then appends a token would land it after the pads, and the pads would sit inside the sequence forever.
- **the attention mask** zeroes every pad column, so a real token never attends to padding: the result
  for each row equals running that row alone (up to float rounding of different matrix shapes).

The rows' keys/values are kept outside the model (per-sequence tensors in `batching`, blocks in `paged`):
each call gathers them into a padded `transformers.DynamicCache`, and hands back only the new tokens'
keys/values so the caller's store decides where they live. Gathering every step costs copies; real
engines read the blocks inside the attention kernel (PagedAttention). Readability is the point here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# A sequence's cached keys and values: one (keys, values) pair per layer, each [kv_heads, length, head_dim].
LayerKV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RowResult:
    """One row's outcome: logits of its new tokens [n_new, vocab] and their keys/values per layer."""

    logits: torch.Tensor
    new_kv: list[LayerKV]


def _pad_past(pasts: list[list[LayerKV] | None], n_layers: int, width: int) -> list[LayerKV]:
    """Left-pad every row's cached keys/values to `width` columns: one [B, kv_heads, width, head_dim] per layer."""
    ref = next(p for p in pasts if p)
    layers = []
    for layer in range(n_layers):
        k0 = ref[layer][0]
        keys = k0.new_zeros((len(pasts), k0.shape[0], width, k0.shape[2]))
        values = torch.zeros_like(keys)
        for i, past in enumerate(pasts):
            if past:
                length = past[layer][0].shape[1]
                keys[i, :, width - length:] = past[layer][0]
                values[i, :, width - length:] = past[layer][1]
        layers.append((keys, values))
    return layers


def _inputs(past_lens: list[int], new_tokens: list[list[int]]) -> tuple[torch.Tensor, ...]:
    """Left-padded input ids, per-row positions and the 2-D attention mask over [past | new] columns."""
    width, n_new = max(past_lens), max(len(t) for t in new_tokens)
    ids = torch.zeros((len(new_tokens), n_new), dtype=torch.long)
    positions = torch.zeros_like(ids)
    mask = torch.zeros((len(new_tokens), width + n_new), dtype=torch.long)
    for i, (past_len, tokens) in enumerate(zip(past_lens, new_tokens, strict=True)):
        n = len(tokens)
        ids[i, n_new - n:] = torch.tensor(tokens, dtype=torch.long)
        positions[i, n_new - n:] = torch.arange(past_len, past_len + n)
        mask[i, width - past_len:width] = 1
        mask[i, width + n_new - n:] = 1
    return ids, positions, mask


@torch.inference_mode()
def forward_rows(model, pasts: list[list[LayerKV] | None], new_tokens: list[list[int]]) -> list[RowResult]:
    """One forward pass over rows of different lengths; see the module docstring for the padding scheme.

    `pasts[i]` is row i's cached keys/values (None or [] for a row with nothing cached yet) and
    `new_tokens[i]` the tokens it feeds now (at least one). Returns, per row, the logits of its new tokens
    and their keys/values, as if the row had run alone.
    """
    from transformers import DynamicCache  # lazy: transformers is a heavy optional dependency

    if len(pasts) != len(new_tokens) or any(len(t) == 0 for t in new_tokens):
        raise ValueError("forward_rows needs one past per row and at least one new token per row")
    past_lens = [p[0][0].shape[1] if p else 0 for p in pasts]
    width, n_new = max(past_lens), max(len(t) for t in new_tokens)
    n_layers = model.config.num_hidden_layers
    cache = DynamicCache(_pad_past(pasts, n_layers, width)) if width else DynamicCache()
    ids, positions, mask = _inputs(past_lens, new_tokens)
    out = model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache,
                cache_position=torch.arange(width, width + n_new), use_cache=True)
    results = []
    for i, tokens in enumerate(new_tokens):
        first = width + n_new - len(tokens)
        new_kv = [(layer.keys[i, :, first:], layer.values[i, :, first:]) for layer in cache.layers]
        results.append(RowResult(out.logits[i, n_new - len(tokens):], new_kv))
    return results


def append_kv(past: list[LayerKV], new_kv: list[LayerKV]) -> list[LayerKV]:
    """A sequence's cache grown by new tokens' keys/values (concatenated along the token axis, per layer)."""
    pairs = zip(past, new_kv, strict=True)
    return [(torch.cat([k, nk], dim=1), torch.cat([v, nv], dim=1)) for (k, v), (nk, nv) in pairs]


def greedy_alone(model, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int | None = None) -> list[int]:
    """Reference output: greedy decoding of one sequence alone through `forward_rows` (prefill, then steps)."""
    past: list[LayerKV] | None = None
    tokens, out = list(prompt_ids), []
    while len(out) < max_new_tokens:
        feed = tokens if past is None else tokens[-1:]  # the prompt once, then only the newest token
        row = forward_rows(model, [past], [feed])[0]
        past = row.new_kv if past is None else append_kv(past, row.new_kv)
        token = int(row.logits[-1].argmax())
        tokens.append(token)
        out.append(token)
        if token == eos_token_id:
            break
    return out
