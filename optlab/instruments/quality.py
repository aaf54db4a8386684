"""Quality of a candidate on held-out data, beside its agreement with the baseline.

`evaluate(candidate, data, baseline)` returns a `Quality`: the task metric (accuracy for
multiclass, AUC for click models), its change against the baseline with a paired
bootstrap interval (is a 0.3% drop real or noise?), output agreement, the worst slice,
and calibration. `gate(quality, ...)` passes or fails it against thresholds and says why.
Compute the baseline's outputs once with `reference(...)` and pass them to every call.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from optlab.data.datasets import Dataset, Split
from optlab.instruments import agreement, metrics
from optlab.models.candidate import Candidate

PRIMARY_METRIC = {"multiclass": "accuracy", "binary": "auc"}


class EvaluationError(ValueError):
    """A candidate's outputs cannot be evaluated (wrong shape, NaN, predict failed)."""


@dataclass
class Reference:
    """Precomputed outputs (logits) of a model on one split: evaluate against it as often
    as you like without predicting the baseline again."""

    name: str
    logits: np.ndarray
    split: str = "test"
    fingerprint: str = ""  # the dataset's fingerprint when it was computed


def predict_split(candidate: Candidate, split: Split, batch_size: int = 256) -> np.ndarray:
    """The candidate's outputs on every row of `split`, in order."""
    if len(split) == 0:
        raise EvaluationError(f"{candidate.name}: the split is empty; nothing to evaluate")
    outputs = []
    for batch in split.batches(batch_size):
        rows = next(iter(batch.values())).shape[0]
        try:
            output = np.asarray(candidate.predict(batch))
        except Exception as error:
            raise EvaluationError(f"{candidate.name}: predict raised {type(error).__name__}: {error}") from error
        if output.ndim == 0 or output.shape[0] != rows:
            raise EvaluationError(f"{candidate.name}: predict returned shape {output.shape} for a batch of {rows} "
                                  "rows; outputs must be batch-first")
        outputs.append(output)
    return np.concatenate(outputs, axis=0)


def reference(candidate: Candidate, data: Dataset, split: str = "test", batch_size: int = 256) -> Reference:
    """The baseline's outputs on a split, computed once for a whole study."""
    batch_size = min(batch_size, int(data.meta.get("max_batch_rows") or batch_size))
    return Reference(candidate.name, predict_split(candidate, getattr(data, split), batch_size), split,
                     data.fingerprint)


def _logits(source: Candidate | Reference | np.ndarray, data: Dataset, split: str, batch_size: int,
            role: str) -> tuple[str, np.ndarray]:
    if isinstance(source, Reference):
        if source.split != split:
            raise EvaluationError(f"{role} {source.name!r} holds outputs on the {source.split!r} split, not "
                                  f"{split!r}; compute reference(..., split={split!r})")
        name, logits = source.name, source.logits
    elif isinstance(source, np.ndarray):
        name, logits = role, source
    else:  # an analyst's huge rows come with the largest batch that fits in memory (wrap_checks)
        batch_size = min(batch_size, int(data.meta.get("max_batch_rows") or batch_size))
        name, logits = source.name, predict_split(source, getattr(data, split), batch_size)
    logits = np.asarray(logits, dtype=np.float64)
    rows = len(getattr(data, split))
    if data.task == "outputs":  # an analyst's model: any output shape, compared by agreement
        if logits.ndim == 0 or logits.shape[0] != rows:
            raise EvaluationError(f"{name}: outputs have shape {logits.shape}, expected {rows} rows on axis 0")
        return name, logits.reshape(rows, -1)
    if data.task == "binary" and logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    wanted = (rows,) if data.task == "binary" else (rows, data.num_classes)
    if logits.shape != wanted:
        raise EvaluationError(f"{name}: outputs have shape {logits.shape}, expected {wanted} "
                              f"({data.task} logits for the {rows} rows of the {split!r} split)")
    if not np.all(np.isfinite(logits)):
        raise EvaluationError(f"{name}: outputs contain NaN or infinite values "
                              f"({int((~np.isfinite(logits)).sum())} entries)")
    return name, logits


@dataclass
class Quality:
    """What a candidate gets right, and how far it moved from the baseline."""

    candidate: str
    dataset: str
    split: str
    task: str
    metric: str
    rows: int
    quality: float  # the metric; higher is better unless metrics.higher_is_better(metric) says not (mae, rmse)
    accuracy: float
    f1: float
    logloss: float
    ece: float
    auc: float | None = None
    mean_predicted: float | None = None  # binary: mean P(click)
    observed_rate: float | None = None  # binary: click rate in the labels
    baseline: str | None = None
    baseline_quality: float | None = None
    quality_drop: float | None = None  # how much worse than the baseline, in the metric's units; positive = worse
    quality_drop_ci_low: float | None = None
    quality_drop_ci_high: float | None = None
    drop_significant: bool | None = None  # the whole 95% interval is above zero
    agreement: float | None = None
    kl_mean: float | None = None
    max_abs_diff: float | None = None
    worst_slice: str | None = None  # "slice=group"
    worst_slice_drop: float | None = None
    worst_slice_rows: int | None = None
    n_boot: int = 0
    output_kinds: str | None = None  # analysts' models: how each output was compared ("name=kind (why)")
    relative_error: float | None = None  # analysts' models: the largest per-output mean relative error
    sequence_agreement: float | None = None  # sequence outputs: per-position top-1 agreement
    identical_rate: float | None = None  # sequence outputs: share of rows whose whole sequence is identical
    degenerate_sample: bool | None = None  # the baseline's outputs on these inputs are all alike
    slices: list[dict[str, Any]] = field(default_factory=list)  # per group: rows, quality, baseline, drop

    def to_row(self) -> dict[str, Any]:
        """One flat dict of scalars (the per-slice table stays in `.slices`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "slices"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Quality":
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Quality":
        return cls.from_dict(json.loads(text))


def _slices(data: Dataset, split: str, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row group labels: the dataset's own slices (test split only), classes as
    slices for multiclass ("rare classes"), and token-length quartiles for text."""
    found: dict[str, np.ndarray] = {}
    if split == "test":
        found.update({name: np.asarray(groups) for name, groups in data.slices.items()
                      if len(groups) == len(labels)})
    if data.task == "multiclass":
        found.setdefault("class", labels)
    mask = getattr(data, split).inputs.get("attention_mask")
    if mask is not None and "length" not in found:
        lengths = np.asarray(mask).sum(axis=1)
        edges = np.unique(np.quantile(lengths, [0.25, 0.5, 0.75]))
        bucket = np.searchsorted(edges, lengths, side="left")
        bounds = np.r_[lengths.min(), edges + 1, lengths.max() + 1]
        names = np.array([f"{int(bounds[i])}-{int(max(bounds[i + 1] - 1, bounds[i]))}" for i in range(len(edges) + 1)])
        found["length"] = names[bucket]
    return found


def _slice_table(slices: dict[str, np.ndarray], labels, cand, base, task, metric, min_rows) -> list[dict[str, Any]]:
    table = []
    for name, groups in slices.items():
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            if len(rows) < min_rows or (metric == "auc" and len(np.unique(labels[rows])) < 2):
                continue
            mine = metrics.score(metric, labels[rows], cand[rows], task)
            entry = {"slice": name, "group": group.item() if hasattr(group, "item") else group, "rows": int(len(rows)),
                     "quality": mine}
            if base is not None:
                theirs = metrics.score(metric, labels[rows], base[rows], task)
                entry.update(baseline_quality=theirs, drop=theirs - mine)
            table.append(entry)
    return table


def evaluate(candidate: Candidate | Reference | np.ndarray, data: Dataset,
             baseline: Candidate | Reference | np.ndarray | None = None, split: str = "test", *,
             metric: str | None = None, batch_size: int = 256, n_boot: int = 1000, seed: int = 0,
             min_slice_rows: int = 20) -> Quality:
    """Evaluate on `split` (default: held-out test). `candidate` and `baseline` may be a
    Candidate, a `Reference` or an array of logits; `metric` defaults to accuracy
    (multiclass) or AUC (binary); "f1" and "accuracy" are also allowed."""
    if data.task == "outputs":
        return _evaluate_outputs(candidate, data, baseline, split, batch_size=batch_size, n_boot=n_boot, seed=seed)
    metric = metric or PRIMARY_METRIC[data.task]
    if metric not in metrics.CLASSIFICATION_METRICS or (metric == "auc" and data.task != "binary"):
        raise ValueError(
            f"metric={metric!r} is not available for a {data.task} task; "
            f"use one of {', '.join(m for m in metrics.CLASSIFICATION_METRICS if m != 'auc' or data.task == 'binary')}"
        )
    labels = np.asarray(getattr(data, split).labels).astype(np.int64)
    name, cand = _logits(candidate, data, split, batch_size, "candidate")
    task = data.task
    quality = Quality(
        candidate=name, dataset=data.name, split=split, task=task, metric=metric, rows=int(len(labels)),
        quality=metrics.score(metric, labels, cand, task), accuracy=metrics.score("accuracy", labels, cand, task),
        f1=metrics.score("f1", labels, cand, task), logloss=metrics.score("logloss", labels, cand, task),
        ece=metrics.calibration_error(labels, cand, task),
    )
    if task == "binary":
        quality.auc = metrics.score("auc", labels, cand, task)
        quality.mean_predicted = float(metrics.probabilities(cand, task).mean())
        quality.observed_rate = float(labels.mean())
    base = None
    if baseline is not None:
        quality.baseline, base = _logits(baseline, data, split, batch_size, "baseline")
        quality.baseline_quality = metrics.score(metric, labels, base, task)
        quality.quality_drop = quality.baseline_quality - quality.quality
        low, high = paired_drop_ci(metric, labels, cand, base, task, n_boot=n_boot, seed=seed)
        quality.quality_drop_ci_low, quality.quality_drop_ci_high, quality.n_boot = low, high, n_boot
        quality.drop_significant = bool(low > 0)
        for key, value in metrics.agreement(cand, base, task).items():
            setattr(quality, key, value)
    quality.slices = _slice_table(_slices(data, split, labels), labels, cand, base, task, metric, min_slice_rows)
    worst = max((s for s in quality.slices if "drop" in s), key=lambda s: s["drop"], default=None)
    if worst is not None:
        quality.worst_slice = f"{worst['slice']}={worst['group']}"
        quality.worst_slice_drop, quality.worst_slice_rows = worst["drop"], worst["rows"]
    return quality


MIN_INTERVAL_ROWS = 8  # below it a bootstrap interval says nothing (one row gives [0.00, 0.00]): not shown


def _evaluate_outputs(candidate, data: Dataset, baseline, split: str, *, batch_size: int, n_boot: int,
                      seed: int) -> Quality:
    """Task "outputs" (see optlab.instruments.agreement): quality is agreement with the baseline's
    outputs, a named regression metric (mae, rmse, r2) or the user's metric callable on their labels."""

    name, cand = _logits(candidate, data, split, batch_size, "candidate")
    metric_fn = data.meta.get("metric_fn")
    named = data.meta.get("regression_metric")
    labels = getattr(data, split).labels if data.meta.get("labelled") else None
    quality = Quality(candidate=name, dataset=data.name, split=split, task="outputs",
                      metric=data.meta.get("metric_name") or "agreement", rows=int(len(cand)),
                      quality=float("nan"), accuracy=None, f1=None, logloss=None, ece=None)
    if named and labels is not None:
        quality.quality = metrics.score(named, labels, cand, "regression")
    elif metric_fn is not None and labels is not None:
        quality.quality = float(metric_fn(labels, cand))
    if baseline is None:
        return quality
    quality.baseline, base = _logits(baseline, data, split, batch_size, "baseline")
    layout = agreement.output_layout(data.meta, cand.shape[1])
    per_row, quality.slices = agreement.compare(cand, base, layout)
    quality.agreement = float(per_row.mean())
    quality.max_abs_diff = max(s["max_abs_diff"] for s in quality.slices)
    quality.relative_error = max(s["relative_error"] for s in quality.slices)
    for key, value in agreement.row_figures(quality.slices).items():
        setattr(quality, key, value)
    quality.degenerate_sample = data.meta.get("degenerate_sample")
    quality.output_kinds = ", ".join(
        f"{s['group']}={s['kind']}" + (f" ({spec['source']})" if spec.get("source") else "")
        for s, spec in zip(quality.slices, layout, strict=True))
    low, high = _outputs_drop(quality, labels, cand, base, per_row, metric_fn, named, n_boot=n_boot, seed=seed)
    _widen_by_self_disagreement(quality, data, low, high)
    quality.n_boot = n_boot
    if quality.rows < MIN_INTERVAL_ROWS:
        quality.quality_drop_ci_low = quality.quality_drop_ci_high = quality.drop_significant = None
    outputs = [s for s in quality.slices if s["slice"] == "output"]
    worst = max(outputs, key=lambda s: s["drop"], default=None)
    if worst is not None and len(outputs) > 1:
        quality.worst_slice = f"output={worst['group']}"
        quality.worst_slice_drop, quality.worst_slice_rows = worst["drop"], worst["rows"]
    return quality


def _outputs_drop(quality: Quality, labels, cand, base, per_row, metric_fn, named, *, n_boot: int,
                  seed: int) -> tuple[float, float]:
    """Baseline quality, the drop (positive = worse, whichever way the metric points) and its interval."""

    if named and labels is not None:
        labels = np.asarray(labels, dtype=np.float64)
        quality.baseline_quality = metrics.score(named, labels, base, "regression")
        quality.quality_drop = metrics.worse_by(named, quality.baseline_quality, quality.quality)
        for other in metrics.REGRESSION_METRICS:  # every regression metric, each with its paired interval
            mine, theirs = (metrics.score(other, labels, x, "regression") for x in (cand, base))
            low, high = paired_drop_ci(other, labels, cand, base, "regression", n_boot=n_boot, seed=seed)
            quality.slices.append({"slice": "metric", "group": other, "rows": int(len(labels)), "quality": mine,
                                   "baseline_quality": theirs, "drop": metrics.worse_by(other, theirs, mine),
                                   "drop_ci_low": low, "drop_ci_high": high})
        return paired_drop_ci(named, labels, cand, base, "regression", n_boot=n_boot, seed=seed)
    if metric_fn is not None and labels is not None:
        quality.baseline_quality = float(metric_fn(labels, base))
        quality.quality_drop = quality.baseline_quality - quality.quality
        return agreement.metric_drop_ci(metric_fn, labels, cand, base, n_boot=min(n_boot, 200), seed=seed)
    quality.quality, quality.baseline_quality = quality.agreement, 1.0
    quality.quality_drop = 1.0 - quality.agreement
    agree_low, agree_high = agreement.bootstrap_mean_ci(per_row, n_boot=n_boot, seed=seed)
    return 1.0 - agree_high, 1.0 - agree_low


def self_disagreement(data: Dataset) -> float:
    """How far a baseline declared non-deterministic disagrees with itself, in the quality's units:
    the metric's difference between two runs on the same rows (with labels), else 1 - their agreement.
    Measured once from the runs wrapping kept (optlab.models.wrap_checks) and cached in the meta."""

    meta = data.meta
    runs = meta.get("self_runs")
    if runs is None:
        return 0.0
    if "self_drop" not in meta:
        first, second, labels = runs["first"], runs["second"], runs["labels"]
        if meta.get("regression_metric") and meta.get("labelled"):
            name = meta["regression_metric"]
            drop = abs(metrics.score(name, labels, first, "regression") - metrics.score(name, labels, second,
                                                                                        "regression"))
        elif meta.get("metric_fn") is not None and meta.get("labelled"):
            drop = abs(float(meta["metric_fn"](labels, first)) - float(meta["metric_fn"](labels, second)))
        else:
            per_row, _ = agreement.compare(second, first, agreement.output_layout(meta, first.shape[1]))
            drop = float(1.0 - per_row.mean())
        meta["self_drop"] = drop
    return float(meta["self_drop"])


def _widen_by_self_disagreement(quality: Quality, data: Dataset, low: float, high: float) -> None:
    """A baseline declared non-deterministic disagrees with itself by `self_disagreement(data)`; that
    much of a candidate's drop is the baseline's own noise."""
    slack = self_disagreement(data) if quality.baseline != quality.candidate else 0.0
    quality.quality_drop = quality.quality_drop - slack if quality.quality_drop is not None else None
    quality.quality_drop_ci_low, quality.quality_drop_ci_high = low - slack, high - slack
    quality.drop_significant = bool(quality.quality_drop_ci_low > 0)


BOOTSTRAP_AUC_MAX_WORK = 20_000_000  # rows x resamples; past it the AUC interval comes from DeLong


def delong_drop_ci(labels: np.ndarray, candidate: np.ndarray, baseline: np.ndarray,
                   level: float = 0.95) -> tuple[float, float]:
    """Interval of AUC(baseline) - AUC(candidate) for two scores on the same rows, from
    DeLong's covariance of correlated AUCs (fast midrank form): O(n log n), exact in the
    large-sample limit, so 200,000 click rows take a fraction of a second."""
    from scipy.stats import norm, rankdata

    positive = labels == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    v10, v01, aucs = [], [], []
    for scores in (baseline, candidate):
        x, y = scores[positive], scores[~positive]
        tz = rankdata(np.r_[x, y])
        tx, ty = rankdata(x), rankdata(y)
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    cov = np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n
    variance = max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)
    drop, half = aucs[0] - aucs[1], norm.ppf(0.5 + level / 2) * np.sqrt(variance)
    return float(drop - half), float(drop + half)


def paired_drop_ci(metric: str, labels: np.ndarray, candidate: np.ndarray, baseline: np.ndarray, task: str, *,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of how much worse the candidate is (baseline - candidate for a metric where
    higher is better, candidate - baseline otherwise) over paired resamples of the rows
    (for AUC on large splits, DeLong's interval instead: same question, far less work)."""
    if metric == "auc" and len(labels) * n_boot > BOOTSTRAP_AUC_MAX_WORK:
        return delong_drop_ci(labels, candidate, baseline, level)
    rng = np.random.default_rng(seed)
    function = metrics.METRICS[metric]
    sign = 1.0 if metrics.higher_is_better(metric) else -1.0  # the drop is "worse by", either way
    chunk = max(1, min(n_boot, 2_000_000 // max(len(labels), 1)))
    drops = []
    for start in range(0, n_boot, chunk):
        weights = metrics.resample_weights(len(labels), min(chunk, n_boot - start), rng)
        drops.append(sign * (function(labels, baseline, task, weights) - function(labels, candidate, task, weights)))
    drops = np.concatenate(drops)
    drops = drops[np.isfinite(drops)]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(drops, [alpha, 1.0 - alpha]) if drops.size else (np.nan, np.nan)
    return float(low), float(high)


def metric_ci(metric: str, labels: np.ndarray, logits: np.ndarray, task: str, *, n_boot: int = 1000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of one model's `metric` on these rows (its own uncertainty, not a
    drop against another model; see `paired_drop_ci` for that)."""
    labels = np.asarray(labels).astype(np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    rng = np.random.default_rng(seed)
    function = metrics.METRICS[metric]
    chunk = max(1, min(n_boot, 2_000_000 // max(len(labels), 1)))
    values = np.concatenate([
        function(labels, logits, task, metrics.resample_weights(len(labels), min(chunk, n_boot - start), rng))
        for start in range(0, n_boot, chunk)])
    values = values[np.isfinite(values)]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha]) if values.size else (np.nan, np.nan)
    return float(low), float(high)


@dataclass(frozen=True)
class Gate:
    """The verdict: `passed`, and one line per check saying what was compared."""

    passed: bool
    reasons: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(reason for reason in self.reasons if reason.startswith("fail"))


def gate(quality: Quality, max_drop: float | None = 0.01, min_agreement: float | None = None,
         max_slice_drop: float | None = None, *, confident: bool = False) -> Gate:
    """Pass a candidate when its quality drop is at most `max_drop` (absolute, in the
    metric's units), agreement at least `min_agreement` and its worst slice drop at most
    `max_slice_drop`. `confident=True` judges the drop by its interval's upper end."""
    reasons: list[str] = []

    def check(ok: bool, text: str) -> None:
        reasons.append(("pass: " if ok else "fail: ") + text)

    needs_baseline = [t for t in (max_drop, min_agreement, max_slice_drop) if t is not None]
    if needs_baseline and quality.baseline is None:
        check(False, "no baseline to compare with; evaluate(candidate, data, baseline) first")
        return Gate(False, tuple(reasons))
    if max_drop is not None:
        drop = quality.quality_drop_ci_high if confident else quality.quality_drop
        what = "upper end of the 95% interval of the" if confident else "the"
        check(drop <= max_drop, f"{what} {quality.metric} drop {drop:+.4f} vs allowed {max_drop:.4f} "
                                f"(drop {quality.quality_drop:+.4f}, 95% CI [{quality.quality_drop_ci_low:+.4f}, "
                                f"{quality.quality_drop_ci_high:+.4f}])")
    if min_agreement is not None:
        check(quality.agreement >= min_agreement,
              f"agreement with the baseline {quality.agreement:.4f} vs required {min_agreement:.4f}")
    if max_slice_drop is not None:
        worst = quality.worst_slice_drop
        check(worst is None or worst <= max_slice_drop,
              "no slices to check" if worst is None else
              f"worst slice {quality.worst_slice} drop {worst:+.4f} ({quality.worst_slice_rows} rows) "
              f"vs allowed {max_slice_drop:.4f}")
    return Gate(all(r.startswith("pass") for r in reasons), tuple(reasons))
