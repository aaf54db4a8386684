"""Task metrics on logits, written for the paired bootstrap.

Every metric takes `weights` of shape (B, n): how often each row is drawn in each of B
resamples (ones for the plain metric). Resampling the candidate and the baseline with
the same weights gives a paired interval for the change between them, cheaply: rows
are sorted once, never copied per resample. Plain numpy, so `import optlab` stays light.
"""
from __future__ import annotations

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "auc", "f1")  # scored on class labels (auc: binary tasks only)
REGRESSION_METRICS = ("mae", "rmse", "r2")  # on continuous targets: (N,) or (N, 1) predictions
# metric -> is a larger value better? The one place a metric's direction is declared: the quality
# column's direction (study.columns), the gate's, the frontier's and the charts' all ask `higher_is_better`.
DIRECTION = {"accuracy": True, "auc": True, "f1": True, "logloss": False, "agreement": True,
             "mae": False, "rmse": False, "r2": True,
             # names a user's metric or a language model's quality is commonly given
             "mse": False, "loss": False, "log_loss": False, "perplexity": False, "error_rate": False}
HIGHER_IS_BETTER = tuple(m for m, up in DIRECTION.items() if up)  # derived: declare a direction in DIRECTION


def higher_is_better(metric: str | None) -> bool:
    """Whether a larger value of `metric` is better, case-insensitively (unknown, missing or NaN
    names, e.g. a user's callable: yes, as the user API documents for callables)."""
    return DIRECTION.get(str(metric).lower(), True)


def worse_by(metric: str | None, baseline: float, candidate: float) -> float:
    """How much worse the candidate is than the baseline, in the metric's units (positive = worse),
    whichever way the metric points: the `quality_drop` every gate reads."""
    return baseline - candidate if higher_is_better(metric) else candidate - baseline


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_sigmoid(logits: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -logits)


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax (N, C) for multiclass, the positive class's sigmoid (N,) for binary."""
    return np.exp(log_softmax(logits)) if task == "multiclass" else np.exp(log_sigmoid(logits))


def predicted_class(logits: np.ndarray, task: str) -> np.ndarray:
    return logits.argmax(axis=1) if task == "multiclass" else (logits > 0).astype(np.int64)


def resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) counts: row i is drawn weights[b, i] times in resample b."""
    draws = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def ones(n: int) -> np.ndarray:
    return np.ones((1, n), dtype=np.float64)


def accuracy(labels: np.ndarray, logits: np.ndarray, task: str, weights: np.ndarray) -> np.ndarray:
    correct = (predicted_class(logits, task) == labels).astype(np.float64)
    return weights @ correct / weights.sum(axis=1)


def f1(labels: np.ndarray, logits: np.ndarray, task: str, weights: np.ndarray) -> np.ndarray:
    """Macro F1 for multiclass (over classes present in labels or predictions), F1 of
    the positive class for binary."""
    predicted = predicted_class(logits, task)
    classes = np.union1d(labels, predicted) if task == "multiclass" else np.array([1])
    scores = []
    for c in classes:
        true_positive = weights @ ((predicted == c) & (labels == c)).astype(np.float64)
        false_positive = weights @ ((predicted == c) & (labels != c)).astype(np.float64)
        false_negative = weights @ ((predicted != c) & (labels == c)).astype(np.float64)
        denominator = 2 * true_positive + false_positive + false_negative
        scores.append(np.divide(2 * true_positive, denominator, out=np.zeros_like(denominator),
                                where=denominator > 0))
    return np.mean(scores, axis=0)


def log_loss(labels: np.ndarray, logits: np.ndarray, task: str, weights: np.ndarray) -> np.ndarray:
    if task == "multiclass":
        per_row = -log_softmax(logits)[np.arange(labels.shape[0]), labels]
    else:
        per_row = -(labels * log_sigmoid(logits) + (1 - labels) * log_sigmoid(-logits))
    return weights @ per_row / weights.sum(axis=1)


def auc(labels: np.ndarray, logits: np.ndarray, task: str, weights: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of a binary score (ties count one half); NaN when a
    resample holds a single class."""
    if task != "binary":
        raise ValueError("AUC is defined here for binary click models; use accuracy or f1 for multiclass")
    order = np.argsort(logits, kind="stable")
    scores, positive = logits[order], (labels[order] == 1).astype(np.float64)
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - positive), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    return np.divide(numerator, denominator, out=np.full_like(numerator, np.nan), where=denominator > 0)


def _regression_rows(labels: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(labels, dtype=np.float64).reshape(-1), np.asarray(predictions, dtype=np.float64).reshape(-1)


def mae(labels: np.ndarray, predictions: np.ndarray, task: str, weights: np.ndarray) -> np.ndarray:
    """Mean absolute error of continuous predictions (lower is better)."""
    y, p = _regression_rows(labels, predictions)
    return weights @ np.abs(p - y) / weights.sum(axis=1)


def rmse(labels: np.ndarray, predictions: np.ndarray, task: str, weights: np.ndarray) -> np.ndarray:
    """Root mean squared error (lower is better)."""
    y, p = _regression_rows(labels, predictions)
    return np.sqrt(weights @ (p - y) ** 2 / weights.sum(axis=1))


def r2(labels: np.ndarray, predictions: np.ndarray, task: str, weights: np.ndarray) -> np.ndarray:
    """Coefficient of determination, 1 - SSE / SST, per resample (higher is better; NaN where a
    resample's labels are all equal)."""
    y, p = _regression_rows(labels, predictions)
    total = weights.sum(axis=1)
    mean = weights @ y / total
    sst = (weights * (y[None, :] - mean[:, None]) ** 2).sum(axis=1)
    sse = weights @ (p - y) ** 2
    return np.divide(sse, sst, out=np.full_like(sse, np.nan), where=sst > 0) * -1.0 + 1.0


METRICS = {"accuracy": accuracy, "auc": auc, "f1": f1, "logloss": log_loss, "mae": mae, "rmse": rmse, "r2": r2}


def score(name: str, labels: np.ndarray, logits: np.ndarray, task: str) -> float:
    """One metric on all rows."""
    return float(METRICS[name](labels, logits, task, ones(labels.shape[0]))[0])


def split_score(predict, data, split: str = "validation", batch_size: int = 512) -> float:
    """Accuracy (multiclass) or AUC (binary) of `predict` on one split of a Dataset: the plain
    metric an accuracy-aware tuner (INC's autotune) optimizes."""
    rows = getattr(data, split)
    outputs = np.concatenate([np.asarray(predict(batch)) for batch in rows.batches(batch_size)])
    labels = np.asarray(rows.labels)
    if data.task == "binary":
        return score("auc", labels.reshape(-1), outputs.reshape(-1), data.task)
    return score("accuracy", labels, outputs, data.task)


def calibration_error(labels: np.ndarray, logits: np.ndarray, task: str, bins: int = 15) -> float:
    """Expected calibration error: |confidence - observed| averaged over equal-width
    confidence bins, weighted by rows (binary: P(click) vs click rate)."""
    probs = probabilities(logits, task)
    if task == "multiclass":
        confidence, hit = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)
    else:
        confidence, hit = probs, labels.astype(np.float64)
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, confidence, bins) - np.bincount(index, hit, bins))
    return float(gap.sum() / max(count.sum(), 1))


def agreement(candidate: np.ndarray, baseline: np.ndarray, task: str) -> dict[str, float]:
    """How closely a candidate's outputs follow the baseline's: top-1 (or click/no-click)
    agreement, mean KL(baseline || candidate) of probabilities, max |logit difference|."""
    if task == "multiclass":
        same = candidate.argmax(axis=1) == baseline.argmax(axis=1)
        log_b, log_c = log_softmax(baseline), log_softmax(candidate)
        kl = (np.exp(log_b) * (log_b - log_c)).sum(axis=1)
    else:
        same = (candidate > 0) == (baseline > 0)
        pb, log_b1, log_b0 = np.exp(log_sigmoid(baseline)), log_sigmoid(baseline), log_sigmoid(-baseline)
        kl = pb * (log_b1 - log_sigmoid(candidate)) + (1 - pb) * (log_b0 - log_sigmoid(-candidate))
    return {"agreement": float(same.mean()), "kl_mean": float(np.maximum(kl, 0.0).mean()),
            "max_abs_diff": float(np.abs(candidate - baseline).max()) if candidate.size else 0.0}
