"""Caches: hit rates match what the key distribution implies; memory stays within its bound."""
from __future__ import annotations

import time

import numpy as np
import pytest

from optlab.serving import loadgen
from optlab.serving.cache import (
    FeatureCache,
    ResultCache,
    che_hit_rate,
    zipf_keys,
    zipf_probabilities,
)
from optlab.serving.policies import NoBatching
from optlab.serving.schedules import Poisson
from optlab.serving.server import Server

ITEM = np.zeros(16, np.float32)  # 64 bytes + 64 bookkeeping = 128 bytes per entry


def test_lru_hit_rate_matches_che_for_zipf_keys():
    keys = zipf_keys(60_000, n_keys=2000, exponent=0.9, seed=0)
    capacity = 200
    cache = ResultCache(max_bytes=capacity * 128)
    for key in keys[:10_000]:  # warm up to the steady state
        if cache.get(key) is None:
            cache.put(key, ITEM)
    cache.hits = cache.misses = 0
    for key in keys[10_000:]:
        if cache.get(key) is None:
            cache.put(key, ITEM)
    expected = che_hit_rate(zipf_probabilities(2000, 0.9), capacity)
    assert abs(cache.hit_rate - expected) < 0.02, (cache.hit_rate, expected)
    assert len(cache) == capacity and cache.bytes_used <= cache.max_bytes and cache.evictions > 0


def test_a_cache_that_holds_every_key_misses_only_first_sightings():
    keys = zipf_keys(5000, n_keys=300, exponent=1.1, seed=4)
    cache = ResultCache(max_bytes=10**7)
    for key in keys:
        if cache.get(key) is None:
            cache.put(key, ITEM)
    assert cache.misses == len(np.unique(keys)) and cache.evictions == 0


def test_feature_cache_computes_each_entity_once_while_it_fits():
    calls = []

    def compute(entity):
        calls.append(entity)
        return np.full(4, entity, np.float32)
    features = FeatureCache(compute, max_bytes=10**6)
    entities = zipf_keys(3000, n_keys=100, exponent=1.0, seed=2)
    out = [features(e) for e in entities]
    assert sorted(calls) == sorted(set(entities.tolist()))
    assert all(o[0] == e for o, e in zip(out, entities, strict=True))
    assert features.stats()["feature_cache_hit_rate"] == pytest.approx(1 - len(calls) / len(entities))


def test_the_server_answers_repeats_from_the_cache():
    def slow(batch):
        time.sleep(0.002)
        return batch["x"] * 2
    payloads = [{"x": np.full((1, 2), i, np.float32)} for i in range(50)]
    keys = zipf_keys(800, n_keys=50, exponent=1.2, seed=0)
    cache = ResultCache(max_bytes=10**6)
    result = loadgen.run(Server(slow, NoBatching(), cache=cache), payloads, Poisson(200, duration_s=2.0), keys=keys)
    frame = result.requests
    hits = frame[frame.batch_size == 0]
    assert result.summary["ok"] == len(frame)
    assert len(hits) == cache.hits > len(frame) / 2
    assert hits.latency_ms.median() < frame[frame.batch_size > 0].latency_ms.median()


def test_bad_cache_sizes_are_refused():
    with pytest.raises(ValueError, match="max_bytes"):
        ResultCache(0)
