"""KV cache on vs off: why every engine keeps the keys and values of the tokens it has already seen.

A causal LM predicts token t+1 from tokens 0..t. Without a cache, each new token means running the model
over the whole prefix again: the pass for the token at position p costs p tokens of compute, so generating
n tokens costs ~n^2/2 and the time per token grows with position. With a cache, the prompt is run once
(prefill) and each later pass feeds only the newest token: its query attends to the cached keys/values of
everything before it, so the time per token stays nearly flat (it grows only with the attention over the
cache, which is small next to the weights for short contexts). Both give the same logits: the cache
stores exactly what recomputation would recompute.

`stepwise_logits` produces the logits that choose each greedy token both ways (the test proves they agree
at every position); `time_per_token` measures the time of each step at each position, both ways, for the
benchmark and the notebook to print (interleaved repeats, median per position).
"""
from __future__ import annotations

import time

import pandas as pd
import torch


@torch.inference_mode()
def stepwise_logits(model, prompt_ids: list[int], n_tokens: int, use_cache: bool) -> torch.Tensor:
    """Greedy decoding of `n_tokens`; returns the logits that picked each token, [n_tokens, vocab].

    use_cache=False recomputes the whole prefix for every token; True prefills once, then feeds one token
    per step on a `transformers.DynamicCache`.
    """
    from transformers import DynamicCache  # lazy: transformers is a heavy optional dependency

    ids, rows = list(prompt_ids), []
    cache = DynamicCache() if use_cache else None
    for _ in range(n_tokens):
        feed = ids if (cache is None or cache.get_seq_length() == 0) else ids[-1:]
        logits = model(input_ids=torch.tensor([feed]), past_key_values=cache, use_cache=use_cache).logits[0, -1]
        rows.append(logits)
        ids.append(int(logits.argmax()))
    return torch.stack(rows)


@torch.inference_mode()
def _timed_pass(model, prompt_ids: list[int], n_tokens: int, use_cache: bool) -> list[float]:
    """Seconds of each step (the first one is the prefill when cached) of one greedy generation."""
    from transformers import DynamicCache  # lazy: transformers is a heavy optional dependency

    ids, seconds = list(prompt_ids), []
    cache = DynamicCache() if use_cache else None
    for step in range(n_tokens):
        feed = ids if (not use_cache or step == 0) else ids[-1:]
        start = time.perf_counter()
        logits = model(input_ids=torch.tensor([feed]), past_key_values=cache, use_cache=use_cache).logits[0, -1]
        ids.append(int(logits.argmax()))
        seconds.append(time.perf_counter() - start)
    return seconds


def time_per_token(model, prompt_ids: list[int], n_tokens: int, repeats: int = 3) -> pd.DataFrame:
    """Time to produce each token, at each position, with the KV cache and by recomputation.

    Returns one row per (mode, position): mode 'cache' or 'recompute', position (tokens in context when the
    token is produced), ms_per_token (median over `repeats`, the two modes interleaved so machine noise
    hits both alike) and repeats. The cache's first row is its prefill (the whole prompt in one pass).
    """
    if n_tokens < 1 or repeats < 1 or not prompt_ids:
        raise ValueError("time_per_token needs a non-empty prompt, n_tokens >= 1 and repeats >= 1")
    runs: dict[str, list[list[float]]] = {"cache": [], "recompute": []}
    for _ in range(repeats):
        for mode in runs:
            runs[mode].append(_timed_pass(model, prompt_ids, n_tokens, use_cache=mode == "cache"))
    rows = []
    for mode, passes in runs.items():
        per_step = torch.tensor(passes).median(dim=0).values
        for step, seconds in enumerate(per_step.tolist()):
            rows.append({"mode": mode, "position": len(prompt_ids) + step, "ms_per_token": seconds * 1e3,
                         "repeats": repeats})
    return pd.DataFrame(rows)


def speedup_at(table: pd.DataFrame, position: int) -> float:
    """How many times faster the cached step is than recomputation at `position` (from `time_per_token`)."""
    at = table[table.position == position].set_index("mode").ms_per_token
    if len(at) != 2:
        raise ValueError(f"position {position} is not in the table; pick one of {sorted(set(table.position))}")
    return float(at["recompute"] / at["cache"])
