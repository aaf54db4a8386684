"""A language model's quality: perplexity on the test topics, and greedy agreement with the fp32 target.

    topic_perplexity(model, tokenizer)              # Perplexity: token-weighted, 95% bootstrap interval
    greedy_agreement(candidate, target, prompts)    # GreedyAgreement: token-level exact match

Perplexity is exp(total negative log-likelihood / total predicted tokens) over non-overlapping windows
of the test topics (never across topics); its interval resamples whole windows, so a window's tokens
stay together as the correlated unit they are. Lower is better.

Greedy agreement decodes the same prompts greedily with both models and counts, position by
position, how many of the reference's tokens the candidate reproduced (1.0: identical outputs). A
quantized or pruned model that changes one early token drifts afterwards, so `prefix` (the share
produced before the first divergence) and `identical_rate` (whole outputs equal) are reported too.
A candidate may also be given as its continuations already decoded (an engine's outputs).

`row()` of each result gives the study's column names (optlab.study.columns).
torch is imported where used, as for every instrument that runs a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from optlab.data.text_corpus import TextCorpus
from optlab.instruments.metrics import resample_weights
from optlab.models import language

MIN_INTERVAL_UNITS = 8  # fewer windows or prompts than this: no interval (it would say nothing)


def _exp(mean_nll):
    """exp of a mean NLL, capped so that a diverged model gives a huge finite number, not an overflow."""
    return np.exp(np.minimum(mean_nll, 700.0))


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Perplexity:
    """Token-weighted perplexity with its 95% bootstrap interval over windows (None when there are
    fewer than `MIN_INTERVAL_UNITS` windows or a figure overflows)."""

    perplexity: float | None
    ci_low: float | None
    ci_high: float | None
    tokens: int
    windows: int
    split: str = "test"

    def row(self) -> dict[str, Any]:
        return {"perplexity": self.perplexity, "perplexity_ci_low": self.ci_low, "perplexity_ci_high": self.ci_high,
                "perplexity_tokens": self.tokens}


def perplexity_of(model, windows: list[np.ndarray], *, n_boot: int = 1000, seed: int = 0,
                  split: str = "test", batch_size: int = 16) -> Perplexity:
    """Perplexity of `model` on token windows (each predicts its tokens after the first)."""
    if not windows:
        raise ValueError("no windows to score: give at least one window of two tokens or more")
    sums, counts = language.token_nll(model, windows, batch_size)
    return from_nll(sums, counts, n_boot=n_boot, seed=seed, split=split)


def from_nll(sums: np.ndarray, counts: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
             split: str = "test") -> Perplexity:
    """Perplexity from per-window summed NLLs and token counts (`language.token_nll`'s output)."""
    value = _finite(float(_exp(sums.sum() / counts.sum())))
    low = high = None
    if len(sums) >= MIN_INTERVAL_UNITS and n_boot > 0:
        weights = resample_weights(len(sums), n_boot, np.random.default_rng(seed))
        low, high = (_finite(float(q)) for q in _exp(np.quantile((weights @ sums) / (weights @ counts),
                                                                  [0.025, 0.975])))
    return Perplexity(value, low, high, int(counts.sum()), len(sums), split)


def topic_perplexity(model, tokenizer, *, split: str = "test", length: int = language.EVAL_LENGTH,
                    limit: int | None = None, n_boot: int = 1000, seed: int = 0,
                    corpus: TextCorpus | None = None) -> Perplexity:
    """Perplexity of `model` on `split`'s topics in windows of `length` tokens (the first `limit` only)."""
    windows = language.windows(language.encode_split(tokenizer, corpus, split), length, limit)
    return perplexity_of(model, windows, n_boot=n_boot, seed=seed, split=split)


def greedy_continuations(model, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Each prompt's greedy continuation of exactly `max_new_tokens` tokens (no early stop at the end
    token, so two models' outputs align position by position), one prompt at a time with the KV cache."""
    import torch

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            if len(prompt) == 0:
                raise ValueError("an empty prompt has nothing to continue: give at least one token")
            ids = torch.tensor([list(prompt)], dtype=torch.long)
            result = model(input_ids=ids, use_cache=True)
            tokens = []
            for _ in range(max_new_tokens):
                token = int(result.logits[0, -1].argmax())
                tokens.append(token)
                result = model(input_ids=torch.tensor([[token]]), past_key_values=result.past_key_values,
                               use_cache=True)
            out.append(tokens)
    return out


@dataclass(frozen=True)
class GreedyAgreement:
    """Token-level exact match of a candidate's greedy outputs with the reference's.

    agreement: matching positions / reference tokens (95% interval over prompts: ci_low, ci_high);
    prefix: mean share of each output produced before the first divergence; identical_rate: share of
    outputs equal throughout."""

    agreement: float
    ci_low: float | None
    ci_high: float | None
    prefix: float
    identical_rate: float
    prompts: int
    tokens: int

    def row(self) -> dict[str, Any]:
        return {"greedy_agreement": self.agreement, "greedy_agreement_ci_low": self.ci_low,
                "greedy_agreement_ci_high": self.ci_high, "greedy_prefix_agreement": self.prefix,
                "greedy_identical_rate": self.identical_rate}


def _outputs(source, prompts, max_new_tokens: int) -> list[list[int]]:
    if isinstance(source, (list, tuple)):
        return [list(map(int, tokens)) for tokens in source]
    if prompts is None:
        raise ValueError("give the prompts to decode with a model (or both sides' continuations as lists)")
    return greedy_continuations(source, prompts, max_new_tokens)


def agreement_of(candidate: list[list[int]], reference: list[list[int]], *, n_boot: int = 1000,
                 seed: int = 0) -> GreedyAgreement:
    """Agreement of decoded outputs, prompt by prompt; a candidate output shorter than the reference's
    (stopped at the end token) counts its missing positions as mismatches."""
    if len(candidate) != len(reference) or not reference or not all(reference):
        raise ValueError(f"need one non-empty reference output per candidate output; got {len(candidate)} "
                         f"candidate and {len(reference)} reference outputs")
    matches, lengths, prefixes = [], [], []
    for cand, ref in zip(candidate, reference, strict=True):
        same = np.array([i < len(cand) and cand[i] == token for i, token in enumerate(ref)])
        matches.append(int(same.sum()))
        lengths.append(len(ref))
        prefixes.append((int(np.argmin(same)) if not same.all() else len(ref)) / len(ref))
    matches, lengths = np.array(matches, dtype=float), np.array(lengths, dtype=float)
    low = high = None
    if len(reference) >= MIN_INTERVAL_UNITS and n_boot > 0:
        weights = resample_weights(len(reference), n_boot, np.random.default_rng(seed))
        low, high = (float(q) for q in np.quantile((weights @ matches) / (weights @ lengths), [0.025, 0.975]))
    identical = float(np.mean([m == n for m, n in zip(matches, lengths, strict=True)]))
    return GreedyAgreement(float(matches.sum() / lengths.sum()), low, high, float(np.mean(prefixes)), identical,
                           len(reference), int(lengths.sum()))


def greedy_agreement(candidate, reference, prompts: Sequence[Sequence[int]] | None = None, *,
                     max_new_tokens: int = 32, n_boot: int = 1000, seed: int = 0) -> GreedyAgreement:
    """Greedy agreement of `candidate` with `reference` (the fp32 target) on `prompts` (token id lists,
    e.g. `[s.prompt_ids for s in language.test_prompts(...)]`). Either side may be a causal LM (decoded
    here for `max_new_tokens`) or its continuations already decoded (a list of token id lists)."""
    ref = _outputs(reference, prompts, max_new_tokens)
    return agreement_of(_outputs(candidate, prompts, max_new_tokens), ref, n_boot=n_boot, seed=seed)


def quality_row(candidate, baseline, windows: list[np.ndarray], prompts: Sequence[Sequence[int]] | None = None, *,
                max_new_tokens: int = 32, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """A generation candidate's quality as a study row's figures: perplexity as the quality (metric
    "perplexity", lower is better), its drop against the fp32 `baseline` on the same windows with a
    paired bootstrap interval (the same windows drawn for both), and, given `prompts`, greedy agreement.

    Keys: metric, quality, quality_drop, quality_drop_ci_low/high, perplexity(+_ci_low/_ci_high/_tokens),
    greedy_agreement(+_ci_low/_ci_high), greedy_prefix_agreement, greedy_identical_rate."""
    if not windows:
        raise ValueError("no windows to score: give at least one window of two tokens or more")
    sums, counts = language.token_nll(candidate, windows)
    base_sums, _ = language.token_nll(baseline, windows)
    mine = from_nll(sums, counts, n_boot=n_boot, seed=seed)
    base = float(_exp(base_sums.sum() / counts.sum()))
    row: dict[str, Any] = {"metric": "perplexity", "quality": mine.perplexity, **mine.row(),
                           "quality_drop": _finite(mine.perplexity - base) if mine.perplexity else None,
                           "quality_drop_ci_low": None, "quality_drop_ci_high": None}
    if len(windows) >= MIN_INTERVAL_UNITS and n_boot > 0:
        weights = resample_weights(len(windows), n_boot, np.random.default_rng(seed))
        tokens = weights @ counts
        drops = _exp(weights @ sums / tokens) - _exp(weights @ base_sums / tokens)
        low, high = np.quantile(drops, [0.025, 0.975])
        row["quality_drop_ci_low"], row["quality_drop_ci_high"] = _finite(low), _finite(high)
    if prompts is not None:
        row.update(greedy_agreement(candidate, baseline, prompts, max_new_tokens=max_new_tokens, n_boot=n_boot,
                                    seed=seed).row())
    return row
