"""Caches in front of the model, and the key streams that exercise them.

`ResultCache` answers an exact repeat of a request without the model: an LRU bounded in bytes
(of the cached outputs), thread-safe, counting hits, misses and evictions. `FeatureCache` holds
the per-entity part of preprocessing (the features of a publisher, a site, a creative): requests
are all different, but their entities repeat. `zipf_keys` draws request keys with Zipf-like
repeats, and `che_hit_rate` is the LRU hit rate such a stream should see (Che's approximation),
so a measured hit rate can be checked against what the key distribution implies.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Hashable

import numpy as np

_KEY_BYTES = 64  # bookkeeping per entry: the key and the LRU link, roughly


def nbytes(value: Any) -> int:
    """Bytes held by a cached value: arrays by their buffers, tuples/lists/dicts by their parts."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return int(np.asarray(value).nbytes)


class ResultCache:
    """An LRU of outputs by request key, holding at most `max_bytes` (values plus ~64 B per entry)."""

    def __init__(self, max_bytes: int):
        if int(max_bytes) != max_bytes or max_bytes < 1:
            raise ValueError(f"max_bytes must be an integer >= 1, got {max_bytes!r} (e.g. 64 * 2**20 for 64 MiB)")
        self.max_bytes = int(max_bytes)
        self._items: collections.OrderedDict[Hashable, tuple[Any, int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.bytes_used = self.hits = self.misses = self.evictions = 0

    def get(self, key: Hashable) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = nbytes(value) + _KEY_BYTES
        if size > self.max_bytes:
            return  # larger than the whole cache: never cached
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes_used -= old[1]
            self._items[key] = (value, size)
            self.bytes_used += size
            while self.bytes_used > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes_used -= dropped
                self.evictions += 1

    def __len__(self) -> int:
        return len(self._items)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")

    def stats(self) -> dict[str, float]:
        return {"cache_hits": self.hits, "cache_misses": self.misses, "cache_hit_rate": self.hit_rate,
                "cache_entries": len(self), "cache_bytes_used": self.bytes_used, "cache_max_bytes": self.max_bytes,
                "cache_evictions": self.evictions}


class FeatureCache:
    """Per-entity features through an LRU: `cache(entity)` calls `compute(entity)` only on a miss."""

    def __init__(self, compute: Callable[[Hashable], Any], max_bytes: int):
        self.compute = compute
        self.cache = ResultCache(max_bytes)

    def __call__(self, entity: Hashable) -> Any:
        value = self.cache.get(entity)
        if value is None:
            value = self.compute(entity)
            self.cache.put(entity, value)
        return value

    def stats(self) -> dict[str, float]:
        return {k.replace("cache_", "feature_cache_"): v for k, v in self.cache.stats().items()}


def zipf_probabilities(n_keys: int, exponent: float = 1.0) -> np.ndarray:
    """P(key k) proportional to 1 / (k + 1) ** exponent over `n_keys` keys (key 0 the most popular)."""
    if n_keys < 1 or exponent < 0:
        raise ValueError(f"need n_keys >= 1 and exponent >= 0, got {n_keys} and {exponent}")
    weights = 1.0 / np.arange(1, n_keys + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def zipf_keys(n: int, n_keys: int, exponent: float = 1.0, seed: int = 0) -> np.ndarray:
    """`n` request keys in [0, n_keys) with Zipf-like repeats (a few keys are most of the traffic)."""
    return np.random.default_rng(seed).choice(n_keys, size=n, p=zipf_probabilities(n_keys, exponent))


def che_hit_rate(probabilities: np.ndarray, capacity_items: int) -> float:
    """Steady-state LRU hit rate for independent requests with these key probabilities and room for
    `capacity_items` entries (Che's approximation: exact enough for Zipf streams of a few keys up)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if capacity_items >= len(p):
        return 1.0
    if capacity_items <= 0:
        return 0.0
    from scipy import optimize  # here, not at import: scipy.optimize costs a service process ~0.5 s of cold start

    occupied = lambda t: float(np.sum(1.0 - np.exp(-p * t))) - capacity_items  # noqa: E731
    high = 1.0
    while occupied(high) < 0:
        high *= 2
    t_c = optimize.brentq(occupied, 0.0, high)
    return float(np.sum(p * (1.0 - np.exp(-p * t_c))))
