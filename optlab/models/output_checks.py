"""Is the baseline's own output on the user's sample informative? A sample on which the model
predicts blank at every position, an empty map, or one class for every row cannot tell a good
candidate from a broken one: every candidate that also predicts "nothing" agrees perfectly.

`degenerate_outputs` names each such output in one line; `from_onnx` / `from_module` warn with
it when the model is wrapped (`DegenerateSample`) and the study's rows carry the flag.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

ADVICE = "quality figures cannot separate candidates; give representative inputs"


class DegenerateSample(UserWarning):
    """The baseline's outputs on the given inputs are all alike: agreement with them says little."""


def _sequence(name: str, values: np.ndarray) -> str | None:
    top = values.argmax(axis=-1)
    if top.size and (top == top.flat[0]).all():
        label = "blank" if int(top.flat[0]) in (0, values.shape[-1] - 1) else "the same class"
        return (f"the model predicts {label} (class {int(top.flat[0])}) at every position of {name!r}")
    return None


def _dense(name: str, values: np.ndarray) -> str | None:
    probabilities = values.min() >= 0.0 and values.max() <= 1.0
    threshold = 0.5 if probabilities else 0.0
    on = values > threshold
    if not on.any():
        return f"the map {name!r} is empty (nothing above {threshold:g}) in every row"
    if on.all():
        return f"the map {name!r} is full (everything above {threshold:g}) in every row"
    return None


def _classes(name: str, values: np.ndarray) -> str | None:
    if len(values) < 2:
        return None
    flat = values.reshape(len(values), -1)
    top = flat.argmax(axis=1) if flat.shape[1] > 1 else (flat[:, 0] > 0).astype(int)
    if (top == top[0]).all():
        return f"the model predicts class {int(top[0])} for every row of {name!r}"
    return None


CHECKS: dict[str, Callable[[str, np.ndarray], str | None]] = {
    "sequence": _sequence, "dense": _dense, "classes": _classes, "scores": _classes}


def degenerate_outputs(outputs: np.ndarray, layout: list[dict[str, Any]]) -> list[str]:
    """One reason per output whose values on these rows are degenerate (see the module docstring);
    `outputs` is the baseline's flattened (N, total width) output, split by `layout`."""
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    reasons, start = [], 0
    for spec in layout:
        width = int(spec["width"])
        part = outputs[:, start:start + width]
        start += width
        check = CHECKS.get(spec["kind"])
        if check is None or not len(part):
            continue
        shape = spec.get("shape")
        reason = check(spec["name"], part.reshape(len(part), *shape) if shape else part)
        if reason:
            reasons.append(reason)
    return reasons


def describe(reasons: list[str]) -> str:
    """The one line said at wrap time."""
    return f"on these inputs {'; '.join(reasons)}: {ADVICE}"
