"""An analyst's labels and metric, checked before any work: a metric needs labels and labels a
metric; a named metric sets the task (class metrics: classification with class indices; mae,
rmse, r2: continuous targets on a one-value output); a callable keeps the "outputs" task and
scores the labels itself. Labels that would be silently truncated or are not finite are
refused with a one-line message naming the fix.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from optlab.models.output_kinds import NAMED_METRICS


def _check_metric_and_labels(labels: Any, metric: Any) -> None:
    if labels is not None and metric is None:
        raise ValueError("labels were given without a metric; pass metric='accuracy' | 'f1' | 'auc' | 'logloss' "
                         "(class labels) or 'mae' | 'rmse' | 'r2' (continuous targets), or a callable "
                         "metric(labels, outputs) -> float (higher is better)")
    if metric is not None and labels is None:
        raise ValueError(f"metric={metric!r} needs labels; pass labels=... (one per input row) or leave both out "
                         f"to compare outputs with the baseline's")


def _metric_task(metric: Any, labels: np.ndarray, layout: list[dict[str, Any]],
                 meta: dict[str, Any]) -> tuple[str, int, np.ndarray]:
    """(task, num_classes, labels) for the metric: a class metric makes a classification task, a
    regression metric or a callable keeps "outputs" (quality from the labels, agreement beside it)."""
    widths, names = [o["width"] for o in layout], [o["name"] for o in layout]
    if metric is None:
        return "outputs", int(sum(widths)), labels
    if callable(metric) and not isinstance(metric, str):
        meta.update(metric_fn=metric, metric_name=getattr(metric, "__name__", "metric"))
        return "outputs", int(sum(widths)), labels
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a name or a callable; got {type(metric).__name__}")
    if metric not in NAMED_METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(NAMED_METRICS)} or a callable "
                         f"metric(labels, outputs) -> float")
    if len(widths) != 1:
        raise ValueError(f"metric={metric!r} needs a single-output model, this one has {len(widths)} outputs "
                         f"{names}; pass a callable metric(labels, outputs) that picks the output")
    task = NAMED_METRICS[metric]
    if task == "regression":
        if widths[0] != 1:
            raise ValueError(f"metric={metric!r} scores one continuous prediction per row but the model outputs "
                             f"{widths[0]} values per row; use a class metric (accuracy, f1) for class scores")
        meta.update(regression_metric=metric, metric_name=metric)
        return "outputs", 1, regression_labels(labels, metric)
    if task == "binary" and widths[0] != 1:
        raise ValueError(f"metric={metric!r} expects one click score per row but the model outputs "
                         f"{widths[0]} values; use metric='accuracy' for class scores")
    if task == "multiclass" and widths[0] == 1:
        raise ValueError(f"metric={metric!r} needs class scores but the model outputs one value per row; for a "
                         f"continuous target use metric='mae', 'rmse' or 'r2' (for a click score, 'auc')")
    classes = 2 if task == "binary" else widths[0]
    return task, classes, class_labels(labels, metric, classes)


def regression_labels(labels: np.ndarray, metric: str) -> np.ndarray:
    """Continuous targets as float64, refusing NaN/inf and non-numbers."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "fiub":
        raise ValueError(f"labels have dtype {labels.dtype}; metric={metric!r} needs numbers (one target per row)")
    labels = labels.astype(np.float64)
    bad = ~np.isfinite(labels)
    if bad.any():
        raise ValueError(f"labels hold {int(bad.sum())} NaN or infinite values; metric={metric!r} needs a finite "
                         f"target for every row")
    return labels


def class_labels(labels: np.ndarray, metric: str, classes: int) -> np.ndarray:
    """Labels for a class metric as int64 class indices, refusing what would be silently truncated."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels)
        if bad.any():
            raise ValueError(f"labels hold {int(bad.sum())} NaN or infinite values; metric={metric!r} needs a class "
                             f"index for every row")
        fractional = labels != np.round(labels)
        if fractional.any():
            raise ValueError(f"labels hold {int(fractional.sum())} non-integer values (e.g. "
                             f"{labels[fractional][0]!r}); metric={metric!r} needs class indices 0..{classes - 1}, "
                             f"not scores or probabilities (pass a callable metric for continuous targets)")
    elif labels.dtype.kind not in "iub":
        raise ValueError(f"labels have dtype {labels.dtype}; metric={metric!r} needs integer class indices "
                         f"0..{classes - 1}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels range over [{labels.min()}, {labels.max()}] but the model scores "
                         f"{classes} classes; labels must be class indices 0..{classes - 1}")
    return labels
