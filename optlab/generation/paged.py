"""Paged KV memory (the idea of vLLM's PagedAttention): keys/values live in fixed-size blocks taken from
one pool on demand, instead of one contiguous buffer per sequence reserved for its maximum length.

Why. A contiguous cache must reserve, when a request starts, room for the longest it may become (prompt +
max_new_tokens, or the model's whole context): most of that is empty most of the time (the tokens not yet
generated, and all of them for a request that stops early), and nothing else may use it. Memory, not
compute, then caps how many sequences run at once. Paging reserves at most one partly filled block per
sequence, so nearly every reserved byte holds a real token, and the same budget holds more sequences.

The mechanism, as built here:
- `BlockAllocator`: a pool of `num_blocks` blocks of `block_size` tokens, a free list, and a *block
  table* per sequence (its blocks in order: token t lives in block table[t // block_size] at slot
  t % block_size). A sequence gets a new block only when its last one is full.
- `PagedKV`: the pool as tensors ([num_blocks, kv_heads, block_size, head_dim] per layer, keys and values)
  and the store the continuous batcher (`batching.BatchScheduler`) reads and writes: `gather` copies a
  sequence's blocks, in block-table order, into the contiguous keys/values one attention call needs;
  `write` scatters new tokens' keys/values into their slots. (Real engines read the blocks inside the
  attention kernel instead of copying; here readability is the point, not speed.)
- When the pool is empty and a running sequence needs a block, the scheduler *preempts* the most recently
  admitted sequence: all its blocks go back to the free list and it is recomputed later from its tokens
  (vLLM's recompute policy); the tokens it already emitted are not repeated.

`PagedEngine` is the continuous batcher over this store. `reservation_report` compares paged and
contiguous memory on a trace: bytes reserved vs used and how many sequences a fixed budget holds.
"""
from __future__ import annotations

import math

import pandas as pd

from optlab.generation.batching import BatchScheduler, ContinuousBatchEngine, Sequence
from optlab.generation.decode import LayerKV
from optlab.generation.engine import KvBytes, Request, kv_bytes_per_token


class BlockAllocator:
    """Fixed-size blocks from a free list, a block table per sequence; never hands out a block twice."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks={num_blocks}, block_size={block_size}; both must be at least 1")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_list: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() hands out block 0 first
        self.tables: dict[str, list[int]] = {}

    def blocks_for(self, n_tokens: int) -> int:
        return math.ceil(n_tokens / self.block_size)

    def grow(self, seq_id: str, n_tokens: int) -> bool:
        """Give `seq_id` enough blocks for `n_tokens` tokens; False (and nothing taken) if the pool is short."""
        table = self.tables.setdefault(seq_id, [])
        missing = self.blocks_for(n_tokens) - len(table)
        if missing > len(self.free_list):
            return False
        table.extend(self.free_list.pop() for _ in range(max(missing, 0)))
        return True

    def free(self, seq_id: str) -> None:
        """Every block of `seq_id` goes back to the free list."""
        self.free_list.extend(reversed(self.tables.pop(seq_id, [])))

    def used_blocks(self) -> int:
        return self.num_blocks - len(self.free_list)


class PagedKV:
    """The KV store of `PagedEngine`: a block pool of `budget_bytes` (whole blocks of `block_size` tokens)."""

    def __init__(self, model, budget_bytes: int, block_size: int = 16):
        import torch  # lazy: torch is a heavy optional dependency

        cfg = model.config
        self._per_token = kv_bytes_per_token(model)
        self.allocator = BlockAllocator(budget_bytes // (block_size * self._per_token), block_size)
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        shape = (self.allocator.num_blocks, kv_heads, block_size, head_dim)
        dtype = next(model.parameters()).dtype
        self.pool = [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))
                     for _ in range(cfg.num_hidden_layers)]
        self._lengths: dict[str, int] = {}

    def check(self, request: Request) -> None:
        need = self.allocator.blocks_for(len(request.prompt_ids) + request.max_new_tokens)
        if need > self.allocator.num_blocks:
            raise ValueError(f"request {request.request_id!r} needs {need} blocks but the pool holds "
                             f"{self.allocator.num_blocks}; raise kv_budget_bytes or ask for fewer tokens")

    def admit(self, seq: Sequence) -> bool:
        """Admission takes blocks for the tokens to prefill only; later blocks come on demand. It also leaves
        one free block per running sequence (a watermark, as vLLM keeps one) so that a newcomer does not
        take the very block an older sequence needs at its next token, which would preempt the newcomer
        right after its prefill."""
        spare = len(self.allocator.free_list) - self.allocator.blocks_for(len(seq.tokens))
        if spare < len(self.allocator.tables) or not self.allocator.grow(seq.key, len(seq.tokens)):
            self.allocator.free(seq.key)
            return False
        self._lengths[seq.key] = 0
        return True

    def grow(self, seq: Sequence, length: int) -> bool:
        return self.allocator.grow(seq.key, length)

    def gather(self, seq: Sequence) -> list[LayerKV] | None:
        """The sequence's blocks, in block-table order, copied into contiguous [kv_heads, length, head_dim]."""
        n = self._lengths[seq.key]
        if n == 0:
            return None
        table = self.allocator.tables[seq.key][: self.allocator.blocks_for(n)]
        out = []
        for keys, values in self.pool:
            k = keys[table].permute(1, 0, 2, 3).reshape(keys.shape[1], -1, keys.shape[3])[:, :n]
            v = values[table].permute(1, 0, 2, 3).reshape(values.shape[1], -1, values.shape[3])[:, :n]
            out.append((k, v))
        return out

    def write(self, seq: Sequence, start: int, new_kv: list[LayerKV]) -> None:
        """Scatter each new token's keys/values into slot (table[t // block_size], t % block_size)."""
        table, size = self.allocator.tables[seq.key], self.allocator.block_size
        n = new_kv[0][0].shape[1]
        for t in range(start, start + n):
            block, slot = table[t // size], t % size
            for (keys, values), (nk, nv) in zip(self.pool, new_kv, strict=True):
                keys[block, :, slot] = nk[:, t - start]
                values[block, :, slot] = nv[:, t - start]
        self._lengths[seq.key] = start + n

    def free(self, seq: Sequence) -> None:
        self.allocator.free(seq.key)
        self._lengths.pop(seq.key, None)

    def kv_bytes(self) -> KvBytes:
        """Reserved: blocks handed out (whole blocks); used: tokens written."""
        reserved = self.allocator.used_blocks() * self.allocator.block_size * self._per_token
        return KvBytes(reserved=reserved, used=sum(self._lengths.values()) * self._per_token)


class PagedEngine(ContinuousBatchEngine):
    """Continuous batching whose KV store is a block pool of `kv_budget_bytes` (blocks of `block_size`
    tokens): blocks on demand, preemption (recompute) when the pool runs out. `max_batch`, `prefill_chunk`
    and `eos_token_id` as in `ContinuousBatchEngine`."""

    def __init__(self, model, kv_budget_bytes: int, block_size: int = 16, max_batch: int = 8,
                 prefill_chunk: int | None = None, eos_token_id: int | None = None):
        BatchScheduler.__init__(self, model, PagedKV(model, kv_budget_bytes, block_size), max_batch,
                                prefill_chunk, eos_token_id)


def reservation_report(model, trace: list[tuple[int, str, list[int], int]], budget_bytes: int,
                       block_size: int = 16, max_batch: int = 64) -> pd.DataFrame:
    """Run the same trace (arrival step, id, prompt, max_new_tokens) through the contiguous and the paged
    continuous batcher under one KV budget, sampling kv_bytes after every step.

    One row per store ('contiguous', 'paged'): budget_bytes, peak_reserved_bytes, mean_unused_fraction
    (1 - used/reserved, averaged over steps with something reserved), max_concurrent (sequences running at
    once), steps (scheduler iterations to serve the trace) and preemptions.
    """
    engines = {"contiguous": ContinuousBatchEngine(model, max_batch=max_batch, kv_budget_bytes=budget_bytes),
               "paged": PagedEngine(model, budget_bytes, block_size=block_size, max_batch=max_batch)}
    rows = []
    for name, engine in engines.items():
        pending, step, peak, unused, concurrent = sorted(trace, key=lambda r: r[0]), 0, 0, [], 0
        while pending or engine.has_work():
            while pending and pending[0][0] <= step:
                _, rid, prompt, n = pending.pop(0)
                engine.add(rid, prompt, n)
            engine.step()
            kv = engine.kv_bytes()
            peak, concurrent = max(peak, kv.reserved), max(concurrent, len(engine.running))
            if kv.reserved:
                unused.append(1 - kv.used / kv.reserved)
            step += 1
        rows.append({"store": name, "budget_bytes": budget_bytes, "peak_reserved_bytes": peak,
                     "mean_unused_fraction": sum(unused) / len(unused) if unused else 0.0,
                     "max_concurrent": concurrent, "steps": step, "preemptions": engine.preemptions})
    return pd.DataFrame(rows)
