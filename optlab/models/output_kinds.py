"""What an output holds, and so how a candidate's output is compared with the baseline's
(`optlab.instruments.agreement`): class scores, sequences of class scores, dense maps, values
(embeddings, states) or one continuous value per row. A kind is declared (`output_kinds=`, on the
command line `--output-kind`), told by the graph, or inferred from the evidence: a class metric,
the output's name, softmax-like or unit-norm rows, else the per-row shape."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from optlab.models.onnx_signature import declare, given_as, spelled

# The named metrics and the task each scores: a class metric says the one output holds class scores.
NAMED_METRICS = {"accuracy": "multiclass", "f1": "multiclass", "auc": "binary", "logloss": "binary",
                 "mae": "regression", "rmse": "regression", "r2": "regression"}
# How a candidate's output is compared with the baseline's (optlab.instruments.agreement):
OUTPUT_KINDS = {
    "classes": "class scores (N, C): top-1 agreement",
    "sequence": "class scores per position (N, T, C): per-position top-1 and the rate of identical sequences",
    "dense": "a dense map (N, ..., H, W): IoU of the thresholded maps and relative error",
    "values": "embeddings or states (N, D): the lower of cosine similarity and 1 - relative error",
    "regression": "continuous predictions (N,) or (N, 1): 1 - |error| / the baseline's spread, relative and abs error",
}
# Words in an output's name that say what a (N, C) output holds, where its shape cannot.
CLASS_WORDS = ("logit", "prob", "score", "class", "label", "cls")
VALUE_WORDS = ("embed", "feature", "hidden", "vector", "pool", "represent", "encod", "latent", "state")


class AmbiguousOutput(UserWarning):
    """A (N, C) output with no evidence of what it holds was taken for class scores."""



def output_layout(names: list[str], shapes: list[tuple[int, ...]], declared: dict[str, str] | None = None,
                  hints: dict[str, tuple[str, str]] | None = None, *, sample: np.ndarray | None = None,
                  metric: Any = None) -> list[dict[str, Any]]:
    """[{name, width, shape, kind, source}] per output: the declared kind, else what the graph
    says (`hints`: name -> (kind, why), e.g. a recurrent state), else what the evidence says (a
    class metric, the output's name, softmax-like or unit-norm rows in `sample`), else the kind its
    per-row shape implies; a per-row shape of rank 2 (N, A, B) is ambiguous and must be declared."""
    hints = dict(hints or {})
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise ValueError(f"{spelled('output_kinds')} names {unknown}, which are not outputs of the model; its "
                         f"outputs are {names}")
    parts = _sample_parts(sample, shapes)
    class_metric = isinstance(metric, str) and NAMED_METRICS.get(metric) in ("multiclass", "binary")
    layout = []
    for name, shape, part in zip(names, shapes, parts, strict=True):
        shape = tuple(int(d) for d in shape)
        if name in declared:
            kind, source = declared[name], "declared"
            _check_declared(name, kind, shape)
        elif name in hints:
            kind, source = hints[name][0], f"inferred: {hints[name][1]}"
        elif class_metric and len(names) == 1:
            kind, source = "classes", f"labels for metric={metric!r}"
        else:
            kind, source = _inferred_kind(name, shape, part)
        layout.append({"name": name, "width": int(np.prod(shape)) if shape else 1, "shape": list(shape),
                       "kind": kind, "source": source})
    return layout


def _check_declared(name: str, kind: str, shape: tuple[int, ...]) -> None:
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"{given_as('output_kinds', name, kind)}; choose one of: " +
                         "; ".join(f"{k!r} ({v})" for k, v in OUTPUT_KINDS.items()))
    if kind == "sequence" and len(shape) != 2:
        raise ValueError(f"output {name!r} has per-row shape {list(shape)}; 'sequence' needs (T, C)")
    if kind == "classes" and len(shape) != 1:
        raise ValueError(f"output {name!r} has per-row shape {list(shape)}; 'classes' needs (C,)")
    if kind == "regression" and int(np.prod(shape)) != 1:
        raise ValueError(f"output {name!r} has per-row shape {list(shape)}; 'regression' needs one value per "
                         f"row, (N,) or (N, 1) (an embedding is 'values')")


def _sample_parts(sample: np.ndarray | None, shapes) -> list[np.ndarray | None]:
    """The sample's outputs split by the per-row shapes (None each where no sample fits them)."""
    widths = [int(np.prod(s)) if len(s) else 1 for s in shapes]
    if sample is None or np.ndim(sample) == 0:
        return [None] * len(shapes)
    flat = np.asarray(sample, dtype=np.float64).reshape(len(sample), -1)
    if flat.shape[1] != sum(widths):
        return [None] * len(shapes)
    bounds = np.cumsum([0, *widths])
    return [flat[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _inferred_kind(name: str, shape: tuple[int, ...], part: np.ndarray | None = None) -> tuple[str, str]:
    """(kind, why) from the per-row shape, and for a (N, C) output from its name and values."""
    dims = ", ".join(map(str, shape))
    from_shape = f"inferred from shape (N, {dims})" if shape else "inferred from shape (N,)"
    if len(shape) == 0 or int(np.prod(shape)) == 1:
        return "regression", f"{from_shape}: one continuous value per row"
    if len(shape) == 1:
        return _vector_kind(name, shape, part)
    if len(shape) == 2:
        raise ValueError(f"output {name!r} has shape (N, {dims}): class scores per position or a dense map? Declare "
                         f"it: {declare('output_kinds', name, 'sequence')} (per-position top-1) or "
                         f"{declare('output_kinds', name, 'dense')} (thresholded IoU) or "
                         f"{declare('output_kinds', name, 'values')} (cosine)")
    return "dense", from_shape


def _vector_kind(name: str, shape: tuple[int, ...], part: np.ndarray | None) -> tuple[str, str]:
    """Class scores or an embedding? The name first, then the rows: probabilities (in [0, 1], summing
    to 1) are class scores, unit-norm rows an embedding; with no evidence class scores, with a warning."""
    lowered = name.lower()
    if any(word in lowered for word in VALUE_WORDS):
        return "values", f"inferred from the name {name!r}: an embedding (N, {shape[0]})"
    if any(word in lowered for word in CLASS_WORDS):
        return "classes", f"inferred from the name {name!r}: class scores (N, {shape[0]})"
    if part is not None and len(part):
        if part.min() >= 0 and part.max() <= 1 and np.allclose(part.sum(axis=1), 1.0, atol=1e-3):
            return "classes", f"inferred from rows summing to 1: probabilities (N, {shape[0]})"
        if np.allclose(np.linalg.norm(part, axis=1), 1.0, atol=1e-3):
            return "values", f"inferred from unit-norm rows: an embedding (N, {shape[0]})"
    warnings.warn(f"output {name!r} (N, {shape[0]}) is taken for class scores (top-1 agreement); nothing in its "
                  f"name or values says so. If it is an embedding, declare output_kinds={{{name!r}: 'values'}} "
                  f"(on the command line --output-kind {name}=values)", AmbiguousOutput, stacklevel=4)
    return "classes", f"assumed class scores (N, {shape[0]}): declare 'values' for an embedding"

