"""Request payloads for serving runs, taken from a dataset's held-out split.

`data.requests` is the realistic mix (bids: 1-256 candidate ads per auction). `single_rows` gives
one row per request, as a bid request for one impression arrives: the case where the fixed cost
of each model call dominates and batching requests together pays most.
"""
from __future__ import annotations

import numpy as np


def single_rows(data, n: int = 1000, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`n` one-row requests from `data.test` (a Dataset), rows drawn without replacement where possible."""
    split = data.test
    if len(split) == 0:
        raise ValueError("the dataset's test split is empty: no requests to serve")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(split), size=n, replace=n > len(split))
    return [{k: np.ascontiguousarray(v[row:row + 1]) for k, v in split.inputs.items()} for row in rows]
