"""A cascade as a model: the cheap model answers every row, the rows it is unsure of are answered
again by the expensive model, and its outputs replace the cheap ones there.

Confidence, from the cheap model's outputs (logits), always in [0, 1]:
  top1      the largest softmax probability (classes)
  margin    the largest softmax probability minus the second (classes)
  distance  |P(click) - decision| / the largest distance possible on that side (a click model)
A row goes on when its confidence is below the threshold; threshold 0 sends nothing on and
threshold 1 every row. Plain numpy: the fresh-process loader imports no torch of its own.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optlab.data.datasets import Batch, trim_padding
from optlab.models.candidate import Candidate

CONFIDENCES = ("top1", "margin", "distance")


def confidence(logits: np.ndarray, kind: str, decision: float = 0.5) -> np.ndarray:
    """Per-row confidence in [0, 1] of a model whose outputs are `logits` ((N, C) classes, or (N,) /
    (N, 1) click logits for "distance")."""
    logits = np.asarray(logits, dtype=np.float64)  # float32 saturates: confident rows would all read 1.0
    if kind == "distance":
        if logits.ndim == 2 and logits.shape[1] == 1:
            logits = logits[:, 0]
        if logits.ndim != 1:
            raise ValueError(f"confidence='distance' needs one click logit per row, got outputs of shape "
                             f"{logits.shape}; use 'top1' or 'margin' for class scores")
        p = 1.0 / (1.0 + np.exp(-logits))
        room = np.where(p >= decision, 1.0 - decision, decision)
        return np.minimum(np.abs(p - decision) / room, 1.0)
    if kind not in ("top1", "margin"):
        raise ValueError(f"confidence={kind!r} is not known; choose one of: {', '.join(CONFIDENCES)}")
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"confidence={kind!r} needs class scores of shape (N, C) with C >= 2, got {logits.shape}; "
                         f"use 'distance' for a click model's single logit")
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))  # the top class's term is exactly 1
    total = exp.sum(axis=1)
    if kind == "top1":
        return 1.0 / total
    second = np.partition(exp, -2, axis=1)[:, -2]
    return (1.0 - second) / total


def escalated(conf: np.ndarray, threshold: float) -> np.ndarray:
    """The rows that go on to the expensive model: confidence below the threshold (all at 1)."""
    if threshold >= 1.0:
        return np.ones(conf.shape[0], dtype=bool)
    return conf < threshold


def merge(cheap: np.ndarray, expensive: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The cheap outputs with the escalated rows' replaced by the expensive model's (same row order)."""
    out = np.array(cheap, copy=True)
    out[mask] = np.asarray(expensive, dtype=out.dtype).reshape(out[mask].shape)
    return out


@dataclass
class Router:
    """The cascade's predict function: cheap on every row, expensive on the unsure rows only."""

    cheap: Callable[[Batch], np.ndarray]
    expensive: Callable[[Batch], np.ndarray]
    confidence: str
    threshold: float
    decision: float = 0.5

    def escalated(self, cheap_outputs: np.ndarray) -> np.ndarray:
        return escalated(confidence(cheap_outputs, self.confidence, self.decision), self.threshold)

    def __call__(self, batch: Batch) -> np.ndarray:
        first = np.asarray(self.cheap(batch))
        mask = self.escalated(first)
        if not mask.any():
            return first
        if mask.all():
            return np.asarray(self.expensive(batch), dtype=first.dtype).reshape(first.shape)
        rows = trim_padding({name: value[mask] for name, value in batch.items()})
        return merge(first, self.expensive(rows), mask)


@dataclass
class CascadeCandidate(Candidate):
    """A cascade: its size on disk is both models' (each artifact as built), its parts are kept."""

    parts: tuple[Candidate, Candidate] | None = None

    def split_figures(self, data: Any, split: str = "test") -> dict[str, Any]:
        """Figures of this candidate on a split that go into its results row (the escalated share)."""
        return split_escalation(self, data, split)

    @property
    def size_bytes(self) -> int | None:
        if self.parts is None:
            return None
        sizes = [part.size_bytes for part in self.parts]
        return None if any(size is None for size in sizes) else int(sum(sizes))


def part_spec(candidate: Candidate) -> dict[str, Any] | None:
    """How a fresh process reloads one part (None when it cannot: no loader)."""
    if candidate.loader is None or candidate.artifact_path is None:
        return None
    return {"loader": candidate.loader, "path": str(candidate.artifact_path), "options": dict(candidate.loader_options)}


def _load_part(spec: dict[str, Any], threads: int | None) -> Callable[[Batch], np.ndarray]:
    module_name, _, function_name = spec["loader"].partition(":")
    loader = getattr(importlib.import_module(module_name), function_name)
    options = dict(spec.get("options") or {})
    if threads is not None and "threads" not in options:
        options["threads"] = threads
    return loader(spec["path"], **options)


def write_spec(folder: Path, router: Router, cheap: dict[str, Any], expensive: dict[str, Any]) -> Path:
    """The cascade's artifact: a JSON file naming its two parts' loaders and the routing rule."""
    path = Path(folder) / "cascade.json"
    path.write_text(json.dumps({"cheap": cheap, "expensive": expensive, "confidence": router.confidence,
                                "threshold": router.threshold, "decision": router.decision}, indent=1))
    return path


def load_cascade(path, threads: int | None = None) -> Router:
    """Rebuild a cascade's predict function in a fresh process from its `cascade.json`."""
    spec = json.loads(Path(path).read_text())
    return Router(_load_part(spec["cheap"], threads), _load_part(spec["expensive"], threads), spec["confidence"],
                  float(spec["threshold"]), float(spec["decision"]))


def split_escalation(candidate: "CascadeCandidate", data: Any, split: str = "test",
                     batch_size: int = 256) -> dict[str, Any]:
    """The share of `split`'s rows the cascade sends on, for its results row (beside its threshold)."""
    router, cheap = candidate.predict_fn, candidate.parts[0]
    rows = sent = 0
    for batch in getattr(data, split).batches(batch_size):
        mask = router.escalated(np.asarray(cheap.predict(batch)))
        rows, sent = rows + mask.shape[0], sent + int(mask.sum())
    return {"escalated_share": sent / rows if rows else None, "cascade_threshold": router.threshold}
