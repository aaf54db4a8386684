"""Quality without labels: how far a candidate's outputs moved from the baseline's.

For an analyst's model (task "outputs"), each named output is compared on its own: top-1
agreement for class scores, cosine similarity per row otherwise, with max and mean
absolute differences. The study's `quality` is the mean of those per-output agreements
(1.0 = identical), so `quality_drop` reads as "how much did int8 change my outputs". When
labels and a metric callable are given, that metric is the quality instead.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def output_layout(meta: dict[str, Any], width: int) -> list[dict[str, Any]]:
    """[{name, width, kind}] for the flattened outputs; one "output" spanning all if unknown."""
    layout = meta.get("outputs")
    if layout:
        return list(layout)
    return [{"name": "output", "width": width, "kind": "scores" if width > 1 else "values"}]


def _parts(outputs: np.ndarray, layout: list[dict[str, Any]]):
    start = 0
    for spec in layout:
        yield spec, outputs[:, start:start + int(spec["width"])]
        start += int(spec["width"])


def per_row_agreement(candidate: np.ndarray, baseline: np.ndarray, kind: str) -> np.ndarray:
    """1/0 per row for class scores (same top-1), cosine similarity per row otherwise."""
    if kind == "scores" and candidate.shape[1] > 1:
        return (candidate.argmax(axis=1) == baseline.argmax(axis=1)).astype(np.float64)
    dot = (candidate * baseline).sum(axis=1)
    norms = np.linalg.norm(candidate, axis=1) * np.linalg.norm(baseline, axis=1)
    same = np.isclose(candidate, baseline).all(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(same, 1.0, cosine)


def compare(candidate: np.ndarray, baseline: np.ndarray, layout: list[dict[str, Any]]) -> tuple[np.ndarray, list]:
    """Per-row agreement averaged over outputs, and one summary dict per output."""
    candidate = candidate.reshape(len(candidate), -1).astype(np.float64)
    baseline = baseline.reshape(len(baseline), -1).astype(np.float64)
    if candidate.shape != baseline.shape:
        raise ValueError(f"candidate outputs have shape {candidate.shape} but the baseline's are {baseline.shape}; "
                         f"a recipe changed the model's outputs")
    rows, summaries = [], []
    for spec, cand, base in zip(layout, _parts(candidate, layout), _parts(baseline, layout), strict=True):
        agree = per_row_agreement(cand[1], base[1], spec.get("kind", "values"))
        rows.append(agree)
        diff = np.abs(cand[1] - base[1])
        summaries.append({"slice": "output", "group": spec["name"], "rows": int(len(agree)),
                          "measure": "top-1 agreement" if spec.get("kind") == "scores" else "cosine similarity",
                          "quality": float(agree.mean()), "baseline_quality": 1.0, "drop": float(1.0 - agree.mean()),
                          "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                          "mean_abs_diff": float(diff.mean()) if diff.size else 0.0})
    return np.mean(rows, axis=0), summaries


def bootstrap_mean_ci(values: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def metric_drop_ci(metric: Callable, labels: np.ndarray, candidate: np.ndarray, baseline: np.ndarray, *,
                   n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap interval of metric(baseline) - metric(candidate) for a user's callable."""
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(labels), len(labels))
        drops.append(float(metric(labels[rows], baseline[rows])) - float(metric(labels[rows], candidate[rows])))
    low, high = np.quantile(drops, [0.025, 0.975])
    return float(low), float(high)
