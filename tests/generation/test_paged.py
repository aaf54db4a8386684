"""Paged KV: the block allocator never hands out a block twice and frees every block when requests end or
are preempted; the paged continuous batcher returns exactly each request's alone-greedy tokens, even when
the pool runs out and sequences are preempted and recomputed; paging wastes less than contiguous."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.decode import greedy_alone
from optlab.generation.engine import KvBytes, kv_bytes_per_token
from optlab.generation.paged import BlockAllocator, PagedEngine, reservation_report


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


TRACE = [
    (0, "a", [1, 2, 3], 12),
    (0, "b", [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], 6),
    (1, "c", [15], 10),
    (2, "d", [16, 17, 18, 19, 20], 9),
    (4, "e", [21, 22], 3),
    (6, "f", list(range(30, 45)), 7),
]


def assert_blocks_consistent(alloc: BlockAllocator):
    handed = [b for table in alloc.tables.values() for b in table]
    assert len(handed) == len(set(handed)), "a block is in two block tables"
    assert not set(handed) & set(alloc.free_list), "a block is both handed out and free"
    assert sorted(handed + alloc.free_list) == list(range(alloc.num_blocks))


def drive(engine):
    outputs: dict[str, list[int]] = {}
    pending, step = list(TRACE), 0
    while pending or engine.has_work():
        while pending and pending[0][0] <= step:
            _, rid, prompt, n = pending.pop(0)
            engine.add(rid, prompt, n)
        for event in engine.step():
            outputs.setdefault(event.request_id, []).append(event.token)
        assert_blocks_consistent(engine.store.allocator)
        kv = engine.kv_bytes()
        assert kv.used <= kv.reserved
        step += 1
    return outputs


@pytest.fixture(scope="module")
def model():
    return tiny_llama(4)


@pytest.fixture(scope="module")
def alone(model):
    return {rid: greedy_alone(model, prompt, n) for _, rid, prompt, n in TRACE}


def test_allocator_hands_out_each_block_once_and_frees_all():
    alloc = BlockAllocator(num_blocks=6, block_size=4)
    assert alloc.grow("x", 5) and alloc.tables["x"] == [0, 1]
    assert alloc.grow("y", 8) and alloc.grow("x", 8)
    assert_blocks_consistent(alloc)
    assert not alloc.grow("z", 9)  # needs 3, two left: nothing is taken
    assert alloc.tables["z"] == [] and len(alloc.free_list) == 2
    alloc.free("x")
    assert alloc.grow("z", 9)
    assert_blocks_consistent(alloc)
    for seq in ("y", "z"):
        alloc.free(seq)
    assert sorted(alloc.free_list) == list(range(6)) and not alloc.tables


def test_paged_engine_equals_alone_with_room_for_all(model, alone):
    per = kv_bytes_per_token(model)
    engine = PagedEngine(model, kv_budget_bytes=64 * 4 * per, block_size=4)
    assert drive(engine) == alone
    assert engine.preemptions == 0
    assert engine.kv_bytes() == KvBytes(0, 0)
    assert len(engine.store.allocator.free_list) == 64


def test_paged_engine_preempts_and_recomputes_exactly_when_the_pool_runs_out(model, alone):
    per = kv_bytes_per_token(model)
    engine = PagedEngine(model, kv_budget_bytes=10 * 4 * per, block_size=4, prefill_chunk=6)
    assert drive(engine) == alone
    assert engine.preemptions > 0
    assert sorted(engine.store.allocator.free_list) == list(range(10))
    assert not engine.store.allocator.tables


def test_paging_reserves_less_and_fits_more_than_contiguous(model):
    per = kv_bytes_per_token(model)
    table = reservation_report(model, TRACE, budget_bytes=40 * per, block_size=4).set_index("store")
    assert list(table.index) == ["contiguous", "paged"]
    assert table.mean_unused_fraction["paged"] < table.mean_unused_fraction["contiguous"]
    assert table.max_concurrent["paged"] > table.max_concurrent["contiguous"]
    assert table.preemptions["contiguous"] == 0
    assert (table.peak_reserved_bytes <= 40 * per).all()


def test_request_larger_than_the_pool_is_refused(model):
    per = kv_bytes_per_token(model)
    with pytest.raises(ValueError, match="blocks"):
        PagedEngine(model, kv_budget_bytes=4 * 4 * per, block_size=4).add("big", [1] * 10, 10)
