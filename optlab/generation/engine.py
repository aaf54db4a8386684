"""The engine contract every generation scheduler implements, and the simplest engine: one request at a time.

A generation server cannot answer a request with one model call the way the batch server does: a reply is
a stream of tokens, one decode step each, and requests join and leave while others are in flight. So the
server talks to an *engine* through three calls (`Engine`): `add` a request when it arrives, `step` (one
scheduler iteration: a prefill and/or one decode step, returning the tokens it produced as `TokenEvent`s)
while `has_work()`, and `kv_bytes()` for the KV-cache memory reserved and used right now. The server
timestamps each event: a request's first token gives time to first token (TTFT), the later ones the
inter-token latencies.

`SequentialEngine` is the baseline every other engine is measured against and proven equal to: it serves
the queue first come first served, one request at a time, with a KV cache (prefill the prompt once, then
feed one token per step and reuse the cached keys/values of everything before it), greedy decoding.
Requests behind the current one wait for it to finish entirely: that wait is what batching removes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class TokenEvent:
    """One generated token: `finished` is True on the request's last token (max_new_tokens or eos)."""

    request_id: str
    token: int
    finished: bool


@dataclass(frozen=True)
class KvBytes:
    """KV-cache memory at one moment: `reserved` is set aside for the sequences in flight, `used` holds keys
    and values of tokens already seen. reserved - used is the waste the paged allocator removes."""

    reserved: int
    used: int


class Engine(Protocol):
    """What a generation server needs from a scheduler (see the module docstring)."""

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None: ...

    def step(self) -> list[TokenEvent]: ...

    def has_work(self) -> bool: ...

    def kv_bytes(self) -> KvBytes: ...


def require_engine(engine) -> None:
    """Refuse, before any work, an object without the `Engine` calls a server makes."""
    for method in ("add", "step", "has_work"):
        if not callable(getattr(engine, method, None)):
            raise TypeError(f"{type(engine).__name__} is not an Engine: it has no {method}(); "
                            "pass an engine from optlab.generation (add, step, has_work)")


@dataclass(frozen=True)
class Request:
    """A request as the engines keep it: its id, prompt token ids and how many tokens to generate."""

    request_id: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int


def kv_bytes_per_token(model) -> int:
    """Bytes the KV cache holds per token of one sequence: keys and values, every layer, every KV head."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    itemsize = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * itemsize


def make_request(model, request_id: str, prompt_ids: list[int], max_new_tokens: int, known: set[str]) -> Request:
    """Check a request before any work starts and return it; a bad one raises a one-line ValueError.
    Without a `model` (an engine given only an exported folder) the checks that need one (ids within its
    vocabulary, prompt and output within its positions) are skipped."""
    if request_id in known:
        raise ValueError(f"request id {request_id!r} is already in this engine; give every request a new id")
    if len(prompt_ids) == 0:
        raise ValueError(f"request {request_id!r} has an empty prompt; pass at least one token id")
    if max_new_tokens < 1:
        raise ValueError(f"request {request_id!r}: max_new_tokens={max_new_tokens}; ask for at least 1 token")
    vocab = None if model is None else model.config.vocab_size
    if min(prompt_ids) < 0 or (vocab is not None and max(prompt_ids) >= vocab):
        bound = ">= 0" if vocab is None else f"in [0, {vocab})"
        raise ValueError(f"request {request_id!r}: token ids must lie {bound}; re-encode the prompt")
    limit = None if model is None else model.config.max_position_embeddings
    if limit is not None and len(prompt_ids) + max_new_tokens > limit:
        raise ValueError(
            f"request {request_id!r}: prompt ({len(prompt_ids)}) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's {limit} positions; shorten the prompt or ask for fewer tokens"
        )
    return Request(request_id, tuple(int(t) for t in prompt_ids), int(max_new_tokens))


def is_last(n_generated: int, token: int, request: Request, eos_token_id: int | None) -> bool:
    """A request ends at its max_new_tokens-th token or at the end-of-sequence token, whichever comes first."""
    return n_generated >= request.max_new_tokens or (eos_token_id is not None and token == eos_token_id)


class SequentialEngine:
    """One request at a time, first come first served, KV cache, greedy.

    `step()` either prefills the next queued request (the whole prompt in one forward pass, which yields its
    first token) or decodes one more token of the current one. `model` is a causal LM (e.g.
    `transformers.LlamaForCausalLM`) in eval mode; `eos_token_id` ends a request early when generated.
    """

    def __init__(self, model, eos_token_id: int | None = None):
        self.model = model
        self.eos_token_id = eos_token_id
        self._queue: deque[Request] = deque()
        self._known: set[str] = set()
        self._current: Request | None = None
        self._cache = None
        self._generated: list[int] = []
        self._bytes_per_token = kv_bytes_per_token(model)

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None:
        """Queue a request; it starts once every request before it has finished."""
        request = make_request(self.model, request_id, prompt_ids, max_new_tokens, self._known)
        self._known.add(request_id)
        self._queue.append(request)

    def has_work(self) -> bool:
        return self._current is not None or bool(self._queue)

    def step(self) -> list[TokenEvent]:
        """Prefill the next request or decode one token of the current one; [] when there is nothing to do."""
        if self._current is None:
            if not self._queue:
                return []
            return [self._prefill(self._queue.popleft())]
        return [self._decode()]

    def kv_bytes(self) -> KvBytes:
        """A growing cache reserves exactly what it uses: one sequence's tokens so far."""
        used = 0 if self._cache is None else self._cache.get_seq_length() * self._bytes_per_token
        return KvBytes(reserved=used, used=used)

    @torch.inference_mode()
    def _prefill(self, request: Request) -> TokenEvent:
        from transformers import DynamicCache  # lazy: transformers is a heavy optional dependency

        self._current, self._generated = request, []
        self._cache = DynamicCache()
        ids = torch.tensor([request.prompt_ids], dtype=torch.long)
        out = self.model(input_ids=ids, past_key_values=self._cache, use_cache=True)
        return self._emit(int(out.logits[0, -1].argmax()))

    @torch.inference_mode()
    def _decode(self) -> TokenEvent:
        ids = torch.tensor([[self._generated[-1]]], dtype=torch.long)
        out = self.model(input_ids=ids, past_key_values=self._cache, use_cache=True)
        return self._emit(int(out.logits[0, -1].argmax()))

    def _emit(self, token: int) -> TokenEvent:
        request = self._current
        self._generated.append(token)
        finished = is_last(len(self._generated), token, request, self.eos_token_id)
        if finished:
            self._current, self._cache = None, None
        return TokenEvent(request.request_id, token, finished)


def run_to_completion(engine: Engine) -> dict[str, list[int]]:
    """Step an engine until it has no work; return each request's generated tokens (tests and the bench)."""
    outputs: dict[str, list[int]] = {}
    while engine.has_work():
        for event in engine.step():
            outputs.setdefault(event.request_id, []).append(event.token)
    return outputs
