"""Request payloads for serving runs, taken from a dataset's held-out split.

`data.requests` is the realistic mix (bids: 1-256 candidate ads per auction). `single_rows` gives
one row per request, as a bid request for one impression arrives: the case where the fixed cost
of each model call dominates and batching requests together pays most.
"""
from __future__ import annotations

import numpy as np


def single_rows(data, n: int = 1000, seed: int = 0, rows: int = 1) -> list[dict[str, np.ndarray]]:
    """`n` requests of `rows` rows each from `data.test` (a Dataset), rows drawn at random (without
    replacement where the split is large enough)."""
    split = data.test
    if len(split) == 0:
        raise ValueError("the dataset's test split is empty: no requests to serve")
    if rows < 1:
        raise ValueError(f"rows per request must be >= 1, got {rows}")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(split), size=(n, rows), replace=n * rows > len(split))
    return [{k: np.ascontiguousarray(v[pick]) for k, v in split.inputs.items()} for pick in picks]
