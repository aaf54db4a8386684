"""Quality without labels: how far a candidate's outputs moved from the baseline's.

For an analyst's model (task "outputs"), each named output is compared on its own, by its kind
(declared, or inferred from its shape when the model was wrapped; see
optlab.models.output_kinds.OUTPUT_KINDS):

- classes (N, C): 1/0 per row, same top-1 class;
- sequence (N, T, C): the share of positions with the same top-1 class per row, plus the rate of
  rows whose whole sequence is identical (`identical_rate`);
- dense (N, ..., H, W): IoU per row of the maps thresholded at 0.5 (probabilities in [0, 1]) or
  0 (logits), plus the share of equal pixels (`pixel_agreement`);
- values (embeddings, states): per row the lower of the cosine similarity and 1 - relative error
  (a direction kept but a scale changed is a change too); never top-1;
- regression ((N,) or (N, 1) continuous predictions): per row 1 - |candidate - baseline| / the
  spread (standard deviation) of the baseline's outputs, capped at 0: a prediction moved by a tenth
  of the outputs' spread scores 0.9 and a constant output about 0; the sign of one column means nothing.

Every output also gets its relative error (||candidate - baseline|| / ||baseline||, mean over
rows) and max / mean absolute differences, and for every kind a row whose relative error reaches
ROW_RELATIVE_ERROR_GATE (no closer than an all-zero output) counts as disagreeing: a collapsed
output is caught even where the kind's measure cannot see it. Two empty dense maps have no IoU:
such rows are scored by cosine. The study's `quality` is the mean of the per-row agreements over
outputs (1.0 = identical), so `quality_drop` reads as "how much did int8 change my outputs".
When labels and a metric callable are given, that metric is the quality instead.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

KIND_ALIASES = {"scores": "classes"}  # the name older stored layouts use


def output_layout(meta: dict[str, Any], width: int) -> list[dict[str, Any]]:
    """[{name, width, shape, kind}] for the flattened outputs; one "output" spanning all if unknown."""
    layout = meta.get("outputs")
    if layout:
        return list(layout)
    return [{"name": "output", "width": width, "kind": "classes" if width > 1 else "values"}]


def _parts(outputs: np.ndarray, layout: list[dict[str, Any]]):
    start = 0
    for spec in layout:
        part = outputs[:, start:start + int(spec["width"])]
        shape = spec.get("shape")
        yield spec, part.reshape(len(part), *shape) if shape else part
        start += int(spec["width"])


def _cosine(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    candidate, baseline = candidate.reshape(len(candidate), -1), baseline.reshape(len(baseline), -1)
    dot = (candidate * baseline).sum(axis=1)
    norms = np.linalg.norm(candidate, axis=1) * np.linalg.norm(baseline, axis=1)
    same = np.isclose(candidate, baseline).all(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(same, 1.0, cosine)


def _top1(candidate: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    candidate, baseline = candidate.reshape(len(candidate), -1), baseline.reshape(len(baseline), -1)
    if candidate.shape[1] == 1:  # one score per row: the same side of zero
        return ((candidate[:, 0] > 0) == (baseline[:, 0] > 0)).astype(np.float64), {}
    return (candidate.argmax(axis=1) == baseline.argmax(axis=1)).astype(np.float64), {}


def _sequence(candidate: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    same = candidate.argmax(axis=-1) == baseline.argmax(axis=-1)  # (N, T)
    same = same.reshape(len(same), -1)
    return same.mean(axis=1), {"identical_rate": float(same.all(axis=1).mean())}


def _dense(candidate: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """IoU of the thresholded maps; where both maps are empty the IoU is undefined (two empty
    masks say nothing about the values under the threshold: an all-zero map would score 1.0),
    so those rows are scored by the cosine of the raw maps instead."""
    probabilities = baseline.min() >= 0.0 and baseline.max() <= 1.0
    threshold = 0.5 if probabilities else 0.0
    cand = (candidate > threshold).reshape(len(candidate), -1)
    base = (baseline > threshold).reshape(len(baseline), -1)
    union = (cand | base).sum(axis=1)
    iou = np.where(union > 0, (cand & base).sum(axis=1) / np.maximum(union, 1), _cosine(candidate, baseline))
    return iou.astype(np.float64), {"pixel_agreement": float((cand == base).mean()), "threshold": threshold,
                                    "empty_map_rows": int((union == 0).sum())}


def _values(candidate: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    cosine = _cosine(candidate, baseline)
    closeness = 1.0 - np.minimum(relative_errors(candidate, baseline), 1.0)
    return np.minimum(cosine, closeness), {"cosine": float(cosine.mean()) if cosine.size else 1.0}


def _regression(candidate: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    candidate, baseline = candidate.reshape(len(candidate), -1), baseline.reshape(len(baseline), -1)
    error = np.abs(candidate - baseline).mean(axis=1)
    # The spread of the predictions, not their size: an offset (a price around 150, a temperature in
    # kelvin) must not make a large move look small. An output that never varies falls back to its RMS.
    spread = float(baseline.std()) if baseline.size else 0.0
    scale = spread if spread > 0 else (float(np.sqrt(np.mean(baseline ** 2))) if baseline.size else 0.0)
    if scale > 0:
        agree = 1.0 - np.minimum(error / scale, 1.0)
    else:  # an all-zero baseline: only an exact match agrees
        agree = (error == 0).astype(np.float64)
    return agree, {"mean_abs_error": float(error.mean()) if error.size else 0.0, "baseline_spread": scale}


# kind -> (per-row agreement and extra figures, what the figure is called)
MEASURES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict]], str]] = {
    "classes": (_top1, "top-1 agreement"),
    "sequence": (_sequence, "per-position top-1 agreement"),
    "dense": (_dense, "IoU of thresholded maps"),
    "values": (_values, "min(cosine similarity, 1 - relative error)"),
    "regression": (_regression, "1 - |error| / spread (std) of the baseline's outputs"),
}


def per_row_agreement(candidate: np.ndarray, baseline: np.ndarray, kind: str) -> np.ndarray:
    """Per-row agreement of one output by its kind (see the module docstring)."""
    return MEASURES[_kind(kind)][0](candidate, baseline)[0]


def _kind(kind: str) -> str:
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in MEASURES:
        raise ValueError(f"unknown output kind {kind!r}; choose one of {sorted(MEASURES)}")
    return kind


def relative_errors(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Per row ||candidate - baseline|| / ||baseline|| (0 where both are zero, inf where only the
    baseline is).

    What it is for: judging each row on its own. `values` scores a row by it, and `compare`
    counts a row at or past ROW_RELATIVE_ERROR_GATE as disagreeing, whatever its kind. A vector,
    so that one moved row is seen; `relative_error` and `_summary_relative_error` reduce it to
    the one figure an output's summary carries."""
    candidate, baseline = candidate.reshape(len(candidate), -1), baseline.reshape(len(baseline), -1)
    diff, norm = np.linalg.norm(candidate - baseline, axis=1), np.linalg.norm(baseline, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, diff / np.where(norm > 0, norm, 1.0), np.where(diff > 0, np.inf, 0.0))


def relative_error(candidate: np.ndarray, baseline: np.ndarray) -> float:
    """Mean over rows of ||candidate - baseline|| / ||baseline|| (0 where both are zero): the
    summary figure of an output whose rows are vectors (classes, sequences, maps, embeddings),
    where each row's norm is a fair scale of its own. Not the same number as pooling the rows
    (`_summary_relative_error` does that for a regression column, whose rows are single numbers)."""
    ratio = relative_errors(candidate, baseline)
    return float(ratio.mean()) if ratio.size else 0.0


# A row no closer to the baseline than an all-zero output (relative error >= 1) disagrees, whatever
# its kind's measure says: a collapsed output can keep the top-1 class of a near-tie, an empty
# mask, or a blank-everywhere sequence. One flipped position of a sequence already moves a row
# by ~0.5, so the gate sits at the all-zero output, not below.
ROW_RELATIVE_ERROR_GATE = 1.0


def _summary_relative_error(kind: str, candidate: np.ndarray, baseline: np.ndarray) -> float:
    """The `relative_error` an output's summary reports, chosen by kind.

    Why a second reduction: a regression output has one number per row, so the per-row ratio
    |c - b| / |b| blows up on any prediction near zero and one such row would make the mean
    infinite. For "regression" the rows are pooled instead (||c - b|| / ||b|| over the whole
    column, 1.0 when the baseline is all zero and the candidate is not); every other kind takes
    `relative_error`, the mean of the per-row ratios."""
    if kind != "regression":
        return relative_error(candidate, baseline)
    norm = float(np.linalg.norm(baseline))
    diff = float(np.linalg.norm(candidate - baseline))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else 1.0)


def compare(candidate: np.ndarray, baseline: np.ndarray, layout: list[dict[str, Any]]) -> tuple[np.ndarray, list]:
    """Per-row agreement averaged over outputs, and one summary dict per output."""
    candidate = candidate.reshape(len(candidate), -1).astype(np.float64)
    baseline = baseline.reshape(len(baseline), -1).astype(np.float64)
    if candidate.shape != baseline.shape:
        raise ValueError(f"candidate outputs have shape {candidate.shape} but the baseline's are {baseline.shape}; "
                         f"a recipe changed the model's outputs")
    rows, summaries = [], []
    for (spec, cand), (_, base) in zip(_parts(candidate, layout), _parts(baseline, layout), strict=True):
        kind = _kind(spec.get("kind", "values"))
        measure, label = MEASURES[kind]
        agree, extra = measure(cand, base)
        moved = relative_errors(cand, base) >= ROW_RELATIVE_ERROR_GATE
        agree = np.where(moved, 0.0, agree)
        rows.append(agree)
        diff = np.abs(cand - base)
        summaries.append({"slice": "output", "group": spec["name"], "rows": int(len(agree)), "kind": kind,
                          "measure": label, "quality": float(agree.mean()), "baseline_quality": 1.0,
                          "drop": float(1.0 - agree.mean()),
                          "relative_error": _summary_relative_error(kind, cand, base),
                          "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                          "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
                          "rows_over_relative_error": int(moved.sum()), **extra})
    return np.mean(rows, axis=0), summaries


def row_figures(summaries: list[dict[str, Any]]) -> dict[str, float | None]:
    """The per-output figures a study row carries: for sequence outputs, the per-position top-1
    agreement and the rate of identical sequences (the worst sequence output where there are
    several); None where the model has no sequence output."""
    sequences = [s for s in summaries if s["kind"] == "sequence"]
    if not sequences:
        return {"sequence_agreement": None, "identical_rate": None}
    return {"sequence_agreement": min(s["quality"] for s in sequences),
            "identical_rate": min(s["identical_rate"] for s in sequences)}


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
