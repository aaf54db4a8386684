"""Which rows calibrate a static quantizer: a representative sample or a deliberately skewed one."""
from __future__ import annotations

from typing import Any

import numpy as np


def calibration_rows(data: Any, samples: int, kind: str, seed: int = 0) -> Any:
    """The calibration subset: `representative` = a random sample of the calibration split;
    `skewed` = only rows of its most frequent class (a biased sample, to show why it matters)."""
    split = data.calibration
    rng = np.random.default_rng(seed)
    index = np.arange(len(split))
    if kind == "skewed":
        labels = np.asarray(split.labels).reshape(len(split), -1)[:, 0]
        values, counts = np.unique(labels, return_counts=True)
        index = index[labels == values[np.argmax(counts)]]
    elif kind != "representative":
        raise ValueError(f"calibration_data={kind!r}; choose 'representative' or 'skewed'")
    chosen = rng.permutation(index)[:samples]
    return split.take(np.sort(chosen))
