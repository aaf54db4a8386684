"""A cascade candidate: build the cheap and the expensive model, choose the threshold on the
validation split (never the test split), route between them (`optlab.models.cascade.Router`).

`choose_threshold` is the one rule: escalate the fewest rows (the least confident first) whose
validation quality is at most `max_quality_drop` worse than the expensive model's there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from optlab.instruments import metrics
from optlab.instruments.quality import PRIMARY_METRIC, predict_split
from optlab.models import zoo
from optlab.models.candidate import Candidate
from optlab.models.cascade import CascadeCandidate, Router, confidence, escalated, part_spec, write_spec
from optlab.recipes.cascade import Cascade
from optlab.recipes.recipe import UnsupportedRecipe
from optlab.techniques.registry import apply, register

GRID = 200  # escalated shares tried on the validation split (plus every share when there are fewer rows)


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold, what it does on the validation split, and why."""

    threshold: float
    escalated_share: float  # on the validation split
    quality: float  # the cascade's, on the validation split
    expensive_quality: float
    cheap_quality: float
    metric: str
    met: bool  # False: no threshold short of escalating everything kept the drop within the target


def check_task(data: Any, kind: str) -> None:
    """Refuse a confidence that does not fit the data's task, before any model is built."""
    task = getattr(data, "task", None)
    if task not in ("multiclass", "binary"):
        raise UnsupportedRecipe(f"a cascade needs labelled classes or clicks (task 'multiclass' or 'binary'); "
                                f"this data's task is {task!r}")
    if kind == "distance" and task != "binary":
        raise ValueError(f"Cascade(confidence='distance') is for a click (binary) model; this data is {task}: "
                         f"use confidence='top1' or 'margin'")
    if kind != "distance" and task == "binary":
        raise ValueError(f"Cascade(confidence={kind!r}) is for class scores; this data is a binary click task: "
                         f"use confidence='distance'")


def choose_threshold(cheap: np.ndarray, expensive: np.ndarray, labels: np.ndarray, task: str, kind: str, *,
                     max_quality_drop: float, decision: float = 0.5, metric: str | None = None) -> ThresholdChoice:
    """The threshold of the fewest escalations whose quality on these rows (the validation split's)
    is at most `max_quality_drop` worse than the expensive model's, from the cheap and expensive
    outputs and the labels of the same rows."""
    metric = metric or PRIMARY_METRIC[task]
    labels = np.asarray(labels).astype(np.int64)
    conf = confidence(cheap, kind, decision)
    order = np.argsort(conf, kind="stable")
    n = len(conf)

    def score(logits):
        return metrics.score(metric, labels, logits, task)

    expensive_quality, cheap_quality = score(expensive), score(cheap)
    shares = np.unique(np.round(np.linspace(0, n, min(n, GRID) + 1)).astype(int))
    for k in shares:
        if metrics.worse_by(metric, expensive_quality, score(_merged(cheap, expensive, order[:k]))) > max_quality_drop:
            continue
        # the k least confident rows go on: the threshold is the next row's confidence (ties at the cut go on too)
        threshold = 0.0 if k == 0 else 1.0 if k == n else float(conf[order[k]])
        if 0 < k < n and conf[order[k - 1]] == conf[order[k]]:
            threshold = min(float(np.nextafter(conf[order[k]], 2.0)), 1.0)
        mask = escalated(conf, threshold)
        return ThresholdChoice(threshold, float(mask.mean()), score(_merged(cheap, expensive, mask)),
                               expensive_quality, cheap_quality, metric, True)
    return ThresholdChoice(1.0, 1.0, expensive_quality, expensive_quality, cheap_quality, metric, False)


def _merged(cheap: np.ndarray, expensive: np.ndarray, rows: np.ndarray) -> np.ndarray:
    merged = np.array(cheap, dtype=np.float64, copy=True)
    merged[rows] = np.asarray(expensive, dtype=np.float64)[rows]
    return merged


def expensive_candidate(recipe: Cascade, model: Any, data: Any, *, threads=None, workdir=None) -> Candidate:
    """The expensive model: its recipe applied to the baseline, or the baseline itself (a torch module)."""
    if recipe.expensive is not None:
        return apply(recipe.expensive, model, data, threads=threads, workdir=workdir / "expensive")
    if not hasattr(model, "state_dict"):
        raise UnsupportedRecipe("Cascade(expensive=None) uses the baseline itself, which needs a torch model here; "
                                "give the expensive model as a recipe, e.g. expensive=Compile()")
    return zoo.baseline(model, name="expensive")


@register(Cascade)
def apply_cascade(recipe: Cascade, model: Any, data: Any, *, threads=None, workdir=None) -> CascadeCandidate:
    check_task(data, recipe.confidence)
    cheap = apply(recipe.cheap, model, data, threads=threads, workdir=workdir / "cheap")
    expensive = expensive_candidate(recipe, model, data, threads=threads, workdir=workdir)
    meta: dict[str, Any] = {"cheap": cheap.name, "expensive": expensive.name, "confidence": recipe.confidence}
    if recipe.threshold is None:
        split = data.validation
        choice = choose_threshold(predict_split(cheap, split), predict_split(expensive, split), split.labels,
                                  data.task, recipe.confidence, max_quality_drop=recipe.max_quality_drop,
                                  decision=recipe.decision)
        threshold = choice.threshold
        meta.update(threshold_split="validation", validation_escalated_share=choice.escalated_share,
                    validation_quality=choice.quality, validation_expensive_quality=choice.expensive_quality,
                    validation_cheap_quality=choice.cheap_quality, threshold_met_target=choice.met)
    else:
        threshold = float(recipe.threshold)
        meta["threshold_split"] = "given"
    meta["threshold"] = threshold
    router = Router(cheap.predict_fn, expensive.predict_fn, recipe.confidence, threshold, recipe.decision)
    parts = part_spec(cheap), part_spec(expensive)
    loader = path = None
    if None not in parts:
        path, loader = write_spec(workdir, router, *parts), "optlab.models.cascade:load_cascade"
    return CascadeCandidate(name=recipe.name, predict_fn=router, family="cascade", runtime=cheap.runtime,
                            device=cheap.device, recipe=recipe, model=cheap.model, artifact_path=path, loader=loader,
                            loader_options={"threads": threads} if threads else {}, meta=meta,
                            parts=(cheap, expensive))
