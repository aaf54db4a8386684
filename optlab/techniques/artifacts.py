"""Where technique artifacts go, how torch modules are saved and fed, and which rows calibrate.

Shared by quantize, compile and onnx_export: a workdir per call, file names from recipe
names, example inputs in the dataset's input order, and the calibration subset.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from optlab.candidate import OnnxModel
from optlab.recipes import UnsupportedRecipe

TEXT_AXES = ("input_ids", "attention_mask", "token_type_ids")


def resolve_workdir(workdir: str | os.PathLike | None) -> Path:
    """`workdir`, or a fresh folder under $OPTLAB_CACHE (else the system temp dir)."""
    if workdir is None:
        root = Path(os.environ.get("OPTLAB_CACHE", tempfile.gettempdir())) / "artifacts"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="optlab-", dir=root))
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_file(workdir: Path, name: str, suffix: str) -> Path:
    """A readable, unique file name for a recipe name, e.g. quantize-scheme-bf16-1a2b3c.pt."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:80]
    digest = hashlib.sha1(name.encode()).hexdigest()[:6]
    return workdir / f"{slug}-{digest}{suffix}"


def input_names(data: Any) -> list[str]:
    return list(data.input_names)


def example_batch(data: Any, n: int = 2, split: str = "calibration") -> dict[str, np.ndarray]:
    rows = getattr(data, split)
    return {k: v[:n] for k, v in rows.inputs.items()}


def require_module(model: Any, recipe: Any) -> Any:
    """Torch-level recipes need an nn.Module, not an exported graph."""
    import torch

    if isinstance(model, OnnxModel):
        raise UnsupportedRecipe(
            f"{recipe.name} works on a torch.nn.Module but got an ONNX model ({model.path}); "
            f"put torch-level steps before ONNX export/runtime steps in the Chain")
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedRecipe(f"{recipe.name} needs a torch.nn.Module; got {type(model).__name__}")
    return model


def to_tensors(batch: dict[str, np.ndarray], names: list[str]) -> tuple:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(batch[n])) for n in names)


def positional(module: Any, names: list[str]) -> Any:
    """Wrap a keyword-input model (`model(**inputs)`) so exporters can call it positionally."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self, inner, keys):
            super().__init__()
            self.inner = inner
            self.keys = tuple(keys)

        def forward(self, *xs):
            return self.inner(**dict(zip(self.keys, xs)))

    return Positional(module, names).eval()


def save_module(module: Any, path: Path, original: Any = None) -> dict[str, Any]:
    """Save the whole module so a fresh process can torch.load it; returns extra loader options.

    Modules that do not pickle whole (torchao's int8 tensors hold partials) are saved as a
    state_dict plus a weightless skeleton of `original` (meta tensors) to load it into."""
    import copy

    import torch

    module.__dict__.pop("save", None)  # INC attaches a bound `save` that drags the fp32 model along
    for sub in module.modules():  # INC weight-only layers cache a dequantized fp32 `weight` after a call
        if "qweight" in getattr(sub, "_buffers", {}) and "weight" in sub.__dict__:
            del sub.__dict__["weight"]
    try:
        torch.save(module, path)
        return {}
    except Exception:
        if original is None:
            raise
    torch.save(module.state_dict(), path)
    skeleton = path.with_name(path.stem + ".skeleton.pt")
    torch.save(copy.deepcopy(original).to("meta"), skeleton)
    return {"skeleton": str(skeleton)}


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


def validation_score(predict: Any, data: Any, split: str = "validation", batch_size: int = 512) -> float:
    """Accuracy (multiclass) or AUC (binary) on a split: the plain metric autotune optimizes."""
    rows = getattr(data, split)
    outputs = np.concatenate([np.asarray(predict(b)) for b in rows.batches(batch_size)])
    labels = np.asarray(rows.labels)
    if data.task == "binary":
        return _auc(labels.reshape(-1), outputs.reshape(-1))
    return float((outputs.argmax(axis=1) == labels).mean())


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks over ties
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    positives = labels > 0.5
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
