"""Speculative decoding (greedy): a small draft model guesses k tokens, the target checks them all in one
forward pass, and the output is exactly what the target alone would have generated.

Why it can help. A decode step of the target costs about the same whether it feeds 1 token or k+1: on
small batches it is bound by reading the weights, not by arithmetic. So if a cheap draft proposes
d_1..d_k one at a time, one target pass over [last token, d_1, ..., d_k] yields the target's own greedy
choice g_0..g_k after each prefix. Accept the longest prefix where d_j == g_{j-1} (the draft guessed what
the target would have chosen), then append the target's own next token g_m (the correction where the
draft first disagreed, or a bonus token when all k matched). Each target pass thus yields between 1 and
k+1 tokens, all of them the target's greedy choices: the output is identical by construction, only the
number of target passes changes. The speed-up depends on the acceptance rate (how often the draft agrees)
and on what a draft step costs; under heavy load the target's batch is no longer weight-bound and the
extra verified-but-rejected positions cost real compute, so speculation can slow a busy server down.

Both models keep a `transformers.DynamicCache`; after verification the target's cache is cropped to the
accepted tokens and the draft's to the tokens it proposed that survived. `speculative_generate` runs one
request and reports `SpecStats` (acceptance rate, tokens per target call); `SpeculativeEngine` is the
same as an `Engine` (one request at a time, one verification round per `step`) for the generation server.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from optlab.generation.engine import KvBytes, Request, TokenEvent, is_last, kv_bytes_per_token, make_request


@dataclass(frozen=True)
class SpecStats:
    """Counts of one or more speculative generations: target passes, draft tokens proposed and accepted."""

    target_calls: int = 0
    draft_calls: int = 0
    proposed: int = 0
    accepted: int = 0
    tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed draft tokens (0.0 when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_target_call(self) -> float:
        return self.tokens / self.target_calls if self.target_calls else 0.0

    def plus(self, other: SpecStats) -> SpecStats:
        return SpecStats(*(a + b for a, b in zip(self._tuple(), other._tuple(), strict=True)))

    def _tuple(self) -> tuple[int, ...]:
        return (self.target_calls, self.draft_calls, self.proposed, self.accepted, self.tokens)


class _Speculation:
    """One request's speculative state: tokens so far, the two caches, and one verification round."""

    def __init__(self, target, draft, request: Request, k: int):
        from transformers import DynamicCache  # lazy: transformers is a heavy optional dependency

        self.target, self.draft, self.request, self.k = target, draft, request, k
        self.tokens = list(request.prompt_ids)
        self.target_cache, self.draft_cache = DynamicCache(), DynamicCache()
        self.n_generated = 0

    @torch.inference_mode()
    def prefill(self) -> tuple[list[int], SpecStats]:
        """The target's prefill gives the first token (the draft catches up lazily in the first round)."""
        logits = self.target(input_ids=torch.tensor([self.tokens]), past_key_values=self.target_cache,
                             use_cache=True).logits[0, -1]
        return [int(logits.argmax())], SpecStats(target_calls=1, tokens=1)

    @torch.inference_mode()
    def round(self) -> tuple[list[int], SpecStats]:
        """Draft proposes up to k tokens, the target verifies them in one pass; returns the new tokens."""
        remaining = self.request.max_new_tokens - self.n_generated
        k = min(self.k, remaining - 1)  # never feed the target past the request's last position
        proposals = self._propose(k)
        feed = [self.tokens[-1]] + proposals
        logits = self.target(input_ids=torch.tensor([feed]), past_key_values=self.target_cache,
                              use_cache=True).logits[0]
        choices = logits.argmax(-1).tolist()  # the target's own greedy token after each prefix
        m = 0
        while m < k and proposals[m] == choices[m]:
            m += 1
        new = proposals[:m] + [choices[m]]
        before = len(self.tokens)  # the target cache now covers before - 1 + len(feed) positions
        self.target_cache.crop(before + m)  # keep [.., last, accepted proposals]; g_m is fed next round
        self.draft_cache.crop(min(self.draft_cache.get_seq_length(), before + m))
        return new, SpecStats(target_calls=1, draft_calls=k, proposed=k, accepted=m, tokens=len(new))

    def _propose(self, k: int) -> list[int]:
        """k greedy draft tokens, one draft pass each (the first also feeds whatever the draft has not seen)."""
        proposals: list[int] = []
        for _ in range(k):
            seen = self.draft_cache.get_seq_length()
            feed = (self.tokens + proposals)[seen:]
            logits = self.draft(input_ids=torch.tensor([feed]), past_key_values=self.draft_cache,
                                use_cache=True).logits[0, -1]
            proposals.append(int(logits.argmax()))
        return proposals

    def accept(self, new: list[int], eos_token_id: int | None) -> list[tuple[int, bool]]:
        """Append new tokens up to the request's end; (token, finished) pairs for the ones kept."""
        kept = []
        for token in new:
            self.tokens.append(token)
            self.n_generated += 1
            finished = is_last(self.n_generated, token, self.request, eos_token_id)
            kept.append((token, finished))
            if finished:
                break
        return kept


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k={k}; the draft proposes at least 1 token per round")


def speculative_generate(target, draft, prompt_ids: list[int], max_new_tokens: int, k: int = 4,
                         eos_token_id: int | None = None) -> tuple[list[int], SpecStats]:
    """Greedy speculative decoding of one prompt; returns the tokens (equal to the target's greedy output)
    and the counts behind acceptance rate and tokens per target call."""
    _check_k(k)
    spec = _Speculation(target, draft, make_request(target, "r", prompt_ids, max_new_tokens, set()), k)
    new, stats = spec.prefill()
    kept = spec.accept(new, eos_token_id)
    while not kept[-1][1]:
        new, more = spec.round()
        stats = stats.plus(more)
        kept = spec.accept(new, eos_token_id)
    return spec.tokens[len(prompt_ids):], stats


class SpeculativeEngine:
    """Speculative decoding as an Engine: one request at a time, first come first served; each `step` is
    the target's prefill or one verification round (1 to k+1 tokens). `target` and `draft` share the
    tokenizer; `k` draft tokens per round. `stats` accumulates over all requests served."""

    def __init__(self, target, draft, k: int = 4, eos_token_id: int | None = None):
        _check_k(k)
        if draft.config.vocab_size != target.config.vocab_size:
            raise ValueError("draft and target vocabularies differ; the draft must share the target's tokenizer")
        self.target, self.draft, self.k, self.eos_token_id = target, draft, k, eos_token_id
        self.stats = SpecStats()
        self._queue: deque[Request] = deque()
        self._known: set[str] = set()
        self._current: _Speculation | None = None
        self._per_token = (kv_bytes_per_token(target), kv_bytes_per_token(draft))

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None:
        request = make_request(self.target, request_id, prompt_ids, max_new_tokens, self._known)
        self._known.add(request_id)
        self._queue.append(request)

    def has_work(self) -> bool:
        return self._current is not None or bool(self._queue)

    def step(self) -> list[TokenEvent]:
        if self._current is None:
            if not self._queue:
                return []
            self._current = _Speculation(self.target, self.draft, self._queue.popleft(), self.k)
            new, stats = self._current.prefill()
        else:
            new, stats = self._current.round()
        self.stats = self.stats.plus(stats)
        spec = self._current
        events = [TokenEvent(spec.request.request_id, t, done) for t, done in spec.accept(new, self.eos_token_id)]
        if events[-1].finished:
            self._current = None
        return events

    def kv_bytes(self) -> KvBytes:
        """Both models' caches (they grow as needed, so reserved equals used)."""
        if self._current is None:
            return KvBytes(0, 0)
        used = (self._current.target_cache.get_seq_length() * self._per_token[0]
                + self._current.draft_cache.get_seq_length() * self._per_token[1])
        return KvBytes(used, used)
