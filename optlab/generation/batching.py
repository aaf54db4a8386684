"""Static batching vs continuous batching: two schedulers over the same decode step (`decode.forward_rows`).

**Static batching** forms a batch from the requests waiting when the engine is idle, prefills them
together and decodes them together until the *longest* one is done; a request that finishes early keeps
its slot (and its reserved memory) until then, and a request arriving meanwhile waits for the next batch.
(A padded `generate()` call would also keep computing the finished rows; this version skips that compute,
so if anything it flatters static batching.)

**Continuous batching** (Orca's iteration-level scheduling, vLLM's scheduler) decides at every token
boundary: finished requests leave the batch at once and waiting ones join as soon as a slot and KV memory
are free. Each step runs at most two forward passes: one that prefills the newly admitted rows (their
uncached tokens, at most `prefill_chunk` per row per step, so a long prompt cannot stall everyone's next
token for long), and one decode pass feeding one token to every row that has finished its prompt. Prefill
and decode are kept apart because `forward_rows` pads every row to the batch's most new tokens: mixing a
200-token prompt into a decode batch would make every row compute 200 positions (real engines pack rows
of different lengths without padding; that kernel is out of scope here). Rows have their own positions,
never right padding (see `decode`).

Both keep each sequence's keys/values in a KV store outside the model. `ContiguousKV` here reserves, at
admission, a buffer for the request's maximum length (prompt + max_new_tokens, or a fixed `reserve_tokens`)
the way a contiguous cache must; `paged.PagedKV` allocates fixed-size blocks on demand instead. A store
that runs out of memory mid-sequence makes the scheduler *preempt* the most recently admitted sequence:
its memory is freed and it goes back to the front of the queue, to be recomputed (prompt + the tokens it
already produced, re-prefilled) when memory frees up; the tokens it already emitted are not repeated.

Every sequence is proven, in tests, to receive exactly the tokens decoding it alone gives (greedy).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from optlab.generation.decode import LayerKV, RowResult, forward_rows
from optlab.generation.engine import KvBytes, Request, TokenEvent, is_last, kv_bytes_per_token, make_request


@dataclass(eq=False)  # identity, not field equality: `seq in running` asks for this very sequence
class Sequence:
    """A request in flight: `tokens` is prompt + generated so far, `n_cached` how many have keys/values stored."""

    request: Request
    tokens: list[int]
    n_cached: int = 0
    n_generated: int = 0
    done: bool = False
    order: int = field(default=0, compare=False)  # admission counter: preemption takes the newest first

    @property
    def key(self) -> str:
        return self.request.request_id

    def max_len(self) -> int:
        return len(self.request.prompt_ids) + self.request.max_new_tokens


class KvStore(Protocol):
    """Where sequences' keys/values live between steps (contiguous buffers or paged blocks)."""

    def check(self, request: Request) -> None: ...  # ValueError if the request can never fit

    def admit(self, seq: Sequence) -> bool: ...  # reserve what admission needs; False if it does not fit

    def grow(self, seq: Sequence, length: int) -> bool: ...  # room for `length` tokens; False if out of memory

    def gather(self, seq: Sequence) -> list[LayerKV] | None: ...  # the cached keys/values (None if none)

    def write(self, seq: Sequence, start: int, new_kv: list[LayerKV]) -> None: ...

    def free(self, seq: Sequence) -> None: ...

    def kv_bytes(self) -> KvBytes: ...


class ContiguousKV:
    """One contiguous buffer per sequence, reserved at admission for its maximum length.

    `budget_bytes` (None: unlimited) caps the total reserved; `reserve_tokens` (None: the request's own
    prompt + max_new_tokens) is the length every sequence reserves, e.g. the model's context length as
    engines without per-request limits must.
    """

    def __init__(self, model, budget_bytes: int | None = None, reserve_tokens: int | None = None):
        cfg = model.config
        self._n_layers = cfg.num_hidden_layers
        self._kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self._head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self._dtype = next(model.parameters()).dtype
        self._per_token = kv_bytes_per_token(model)
        self.budget_bytes, self.reserve_tokens = budget_bytes, reserve_tokens
        self._buffers: dict[str, list[LayerKV]] = {}
        self._lengths: dict[str, int] = {}

    def _reserve_len(self, seq: Sequence) -> int:
        return self.reserve_tokens if self.reserve_tokens is not None else seq.max_len()

    def check(self, request: Request) -> None:
        need = len(request.prompt_ids) + request.max_new_tokens
        if self.reserve_tokens is not None and need > self.reserve_tokens:
            raise ValueError(f"request {request.request_id!r} needs {need} tokens but each sequence reserves "
                             f"{self.reserve_tokens}; raise reserve_tokens or ask for fewer tokens")
        length = self.reserve_tokens if self.reserve_tokens is not None else need
        if self.budget_bytes is not None and length * self._per_token > self.budget_bytes:
            raise ValueError(f"request {request.request_id!r} reserves {length * self._per_token} bytes, more than "
                             f"kv_budget_bytes={self.budget_bytes}; raise the budget or ask for fewer tokens")

    def admit(self, seq: Sequence) -> bool:
        import torch  # lazy: torch is a heavy optional dependency

        length = self._reserve_len(seq)
        if self.budget_bytes is not None and self.kv_bytes().reserved + length * self._per_token > self.budget_bytes:
            return False
        shape = (self._kv_heads, length, self._head_dim)
        self._buffers[seq.key] = [(torch.zeros(shape, dtype=self._dtype), torch.zeros(shape, dtype=self._dtype))
                                  for _ in range(self._n_layers)]
        self._lengths[seq.key] = 0
        return True

    def grow(self, seq: Sequence, length: int) -> bool:
        return length <= self._buffers[seq.key][0][0].shape[1]  # reserved up front: never runs out

    def gather(self, seq: Sequence) -> list[LayerKV] | None:
        n = self._lengths[seq.key]
        return [(k[:, :n], v[:, :n]) for k, v in self._buffers[seq.key]] if n else None

    def write(self, seq: Sequence, start: int, new_kv: list[LayerKV]) -> None:
        for (k, v), (nk, nv) in zip(self._buffers[seq.key], new_kv, strict=True):
            k[:, start:start + nk.shape[1]] = nk
            v[:, start:start + nv.shape[1]] = nv
        self._lengths[seq.key] = start + new_kv[0][0].shape[1]

    def free(self, seq: Sequence) -> None:
        self._buffers.pop(seq.key, None)
        self._lengths.pop(seq.key, None)

    def kv_bytes(self) -> KvBytes:
        reserved = sum(b[0][0].shape[1] for b in self._buffers.values()) * self._per_token
        return KvBytes(reserved=reserved, used=sum(self._lengths.values()) * self._per_token)


class BatchScheduler:
    """What static and continuous batching share: the queue, the store, the two forward passes, emission.

    Subclasses decide who joins (`_admit`) and who leaves (`_retire`).
    """

    def __init__(self, model, store: KvStore, max_batch: int = 8, prefill_chunk: int | None = None,
                 eos_token_id: int | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}; a batch holds at least 1 sequence")
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError(f"prefill_chunk={prefill_chunk}; pass None (whole prompt) or a positive token count")
        self.model, self.store = model, store
        self.max_batch, self.prefill_chunk, self.eos_token_id = max_batch, prefill_chunk, eos_token_id
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0
        self._known: set[str] = set()
        self._admitted = 0

    def add(self, request_id: str, prompt_ids: list[int], max_new_tokens: int) -> None:
        """Queue a request; the scheduling policy decides when it joins a batch."""
        request = make_request(self.model, request_id, prompt_ids, max_new_tokens, self._known)
        self.store.check(request)
        self._known.add(request_id)
        self.waiting.append(Sequence(request, list(request.prompt_ids)))

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def kv_bytes(self) -> KvBytes:
        return self.store.kv_bytes()

    def step(self) -> list[TokenEvent]:
        """Admit, run the prefill pass and the decode pass, emit the tokens they produced, retire."""
        self._admit()
        events: list[TokenEvent] = []
        prefilling = [s for s in self.running if not s.done and len(s.tokens) - s.n_cached > 1]
        decoding = [s for s in self.running if not s.done and len(s.tokens) - s.n_cached == 1]
        for group, chunk in ((prefilling, self.prefill_chunk), (decoding, 1)):
            feeds = self._make_room(group, chunk)
            if feeds:
                events += self._run(feeds)
        self._retire()
        return events

    def _start(self, seq: Sequence) -> bool:
        """Try to admit one waiting sequence (the store must fit it); True if it joined the batch."""
        if len(self.running) >= self.max_batch or not self.store.admit(seq):
            return False
        self._admitted += 1
        seq.order = self._admitted
        self.running.append(seq)
        return True

    def _make_room(self, group: list[Sequence], chunk: int | None) -> list[tuple[Sequence, list[int]]]:
        """Each row's feed (its next uncached tokens); grows the store, preempting the newest when it is full."""
        feeds = []
        for seq in group:
            if seq not in self.running:
                continue  # preempted for an older sequence's room earlier in this loop
            end = len(seq.tokens) if chunk is None else min(len(seq.tokens), seq.n_cached + chunk)
            while not self.store.grow(seq, end):
                victim = max(self.running, key=lambda s: s.order)
                self._preempt(victim)
                feeds = [(s, f) for s, f in feeds if s is not victim]
                if victim is seq:
                    break
            if seq in self.running:
                feeds.append((seq, seq.tokens[seq.n_cached:end]))
        return feeds

    def _preempt(self, seq: Sequence) -> None:
        """Free a sequence's memory and queue it first; it is recomputed from its tokens when readmitted."""
        self.store.free(seq)
        self.running.remove(seq)
        seq.n_cached = 0
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def _run(self, feeds: list[tuple[Sequence, list[int]]]) -> list[TokenEvent]:
        pasts = [self.store.gather(seq) for seq, _ in feeds]
        rows: list[RowResult] = forward_rows(self.model, pasts, [tokens for _, tokens in feeds])
        events = []
        for (seq, tokens), row in zip(feeds, rows, strict=True):
            self.store.write(seq, seq.n_cached, row.new_kv)
            seq.n_cached += len(tokens)
            if seq.n_cached == len(seq.tokens):  # its whole input is cached: the last logits give a new token
                events.append(self._emit(seq, int(row.logits[-1].argmax())))
        return events

    def _emit(self, seq: Sequence, token: int) -> TokenEvent:
        seq.tokens.append(token)
        seq.n_generated += 1
        seq.done = is_last(seq.n_generated, token, seq.request, self.eos_token_id)
        return TokenEvent(seq.key, token, seq.done)

    def _admit(self) -> None:
        raise NotImplementedError

    def _retire(self) -> None:
        raise NotImplementedError


class ContinuousBatchEngine(BatchScheduler):
    """Continuous batching: requests join and leave at every token boundary (see the module docstring).

    `max_batch` caps the sequences in flight; `prefill_chunk` caps prompt tokens fed per row per step (None:
    the whole prompt at once); `kv_budget_bytes` caps the contiguous reservations (None: unlimited) and
    `reserve_tokens` fixes each reservation's length (None: the request's prompt + max_new_tokens).
    """

    def __init__(self, model, max_batch: int = 8, prefill_chunk: int | None = None,
                 kv_budget_bytes: int | None = None, reserve_tokens: int | None = None,
                 eos_token_id: int | None = None):
        store = ContiguousKV(model, kv_budget_bytes, reserve_tokens)
        super().__init__(model, store, max_batch, prefill_chunk, eos_token_id)

    def _admit(self) -> None:
        while self.waiting and self._start(self.waiting[0]):
            self.waiting.popleft()

    def _retire(self) -> None:
        for seq in [s for s in self.running if s.done]:
            self.store.free(seq)
            self.running.remove(seq)


class StaticBatchEngine(BatchScheduler):
    """Static batching: a batch forms only when the engine is idle and lives until its longest request is
    done; each row reserves the batch's longest prompt + largest max_new_tokens (a padded rectangle).
    `max_batch` caps the batch, `kv_budget_bytes` the rectangle's bytes (None: unlimited)."""

    def __init__(self, model, max_batch: int = 8, kv_budget_bytes: int | None = None,
                 eos_token_id: int | None = None):
        super().__init__(model, ContiguousKV(model, kv_budget_bytes), max_batch, None, eos_token_id)

    def _admit(self) -> None:
        if self.running or not self.waiting:
            return
        batch = list(self.waiting)[: self.max_batch]
        longest = max(len(s.tokens) for s in batch) + max(s.request.max_new_tokens - s.n_generated for s in batch)
        self.store.reserve_tokens = longest
        for seq in batch:
            if not self._start(seq):
                break
            self.waiting.popleft()
        self.store.reserve_tokens = None
        if not self.running:  # the rectangle does not fit the budget even once: run the first request alone
            self._start(self.waiting.popleft())

    def _retire(self) -> None:
        if self.running and all(s.done for s in self.running):
            for seq in self.running:
                self.store.free(seq)
            self.running = []
