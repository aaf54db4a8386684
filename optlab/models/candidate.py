"""A Candidate is anything that predicts: the baseline and every optimized model.

Every candidate exposes the same `predict(batch) -> np.ndarray` (logits for the task,
batch-first) and says what it is: recipe, runtime, device, artifact and its size.
A candidate that can be re-created from its artifact in a fresh process (for cold start
and memory measurements) names a `loader`: "module:function" called as
`function(artifact_path, **loader_options) -> predict callable`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optlab.data.datasets import Batch

FAMILIES = ("baseline", "quantization", "pruning", "distillation", "compilation", "chain")


@dataclass
class Candidate:
    """One measurable model. `model` is what a following Chain step consumes
    (a torch.nn.Module, or an `OnnxModel` once exported)."""

    name: str
    predict_fn: Callable[[Batch], np.ndarray]
    family: str = "baseline"
    runtime: str = "torch"  # torch | torch.compile | onnxruntime | openvino | inc
    device: str = "cpu"
    recipe: Any = None  # the Recipe that made it (None for a baseline)
    model: Any = None
    artifact_path: Path | None = None
    loader: str | None = None
    loader_options: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, batch: Batch) -> np.ndarray:
        return self.predict_fn(batch)

    __call__ = predict

    @property
    def size_bytes(self) -> int | None:
        """Bytes on disk of the serialized artifact (a file or a folder), if there is one."""
        path = self.artifact_path
        if path is None or not Path(path).exists():
            return None
        path = Path(path)
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    def describe(self) -> dict[str, Any]:
        """Flat metadata for a results row; what building it recorded (`meta`) rides along as JSON."""
        return {
            "candidate": self.name,
            "family": self.family,
            "runtime": self.runtime,
            "device": self.device,
            "recipe": getattr(self.recipe, "name", None),
            "artifact_path": None if self.artifact_path is None else os.fspath(self.artifact_path),
            "size_bytes": self.size_bytes,
            "meta_json": json.dumps(self.meta, sort_keys=True, default=str) if self.meta else None,
        }


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX file as a model: what runtime-level recipes consume and produce."""

    path: Path
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
