"""Small model first: a cascade answers every request with a cheap model and sends the rows it is
unsure of on to the expensive one.

    Cascade(cheap=Chain(Distill(), Compile()), confidence="top1")          # threshold chosen for 0.5 pt
    Cascade(cheap=Distill(), expensive=Compile(), threshold=0.9)          # a fixed threshold

`cheap` is a recipe applied to the baseline (a distilled, pruned or int8 model); `expensive` is a
recipe too, or None for the baseline itself. A row goes on when the cheap model's confidence is
below `threshold` (in [0, 1]: 0 sends nothing on, 1 every row). The confidence is the top-1
probability ("top1") or the gap between the two most likely classes ("margin") for classes, and
for a click (binary-probability) model the distance of P(click) from the decision threshold
`decision`, scaled to [0, 1] ("distance"). With `threshold=None` the threshold is chosen on the
validation split, never the test split: the least escalation whose validation quality is at most
`max_quality_drop` worse than the expensive model's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from optlab.recipes.recipe import Recipe, _check_choice, _check_range, from_dict, parse

CONFIDENCES = ("top1", "margin", "distance")


def _recipe(value: Any, field: str) -> Recipe | None:
    """A nested recipe as given, from its JSON dict or from its name (the command line's spelling)."""
    if value is None or isinstance(value, Recipe):
        return value
    if isinstance(value, dict):
        return from_dict(value)
    if isinstance(value, str):
        return parse(value)
    raise ValueError(f"Cascade.{field}={value!r} must be a recipe, e.g. Chain(Distill(), Compile()), "
                     f"or its name 'distill() -> compile(runtime=onnxruntime)'")


@dataclass(frozen=True)
class Cascade(Recipe):
    """The cheap model answers; rows whose confidence is below `threshold` go to the expensive one."""

    kind: ClassVar[str] = "cascade"
    family: ClassVar[str] = "cascade"
    shown: ClassVar[tuple[str, ...]] = ("confidence",)

    cheap: Recipe
    expensive: Recipe | None = None  # None: the baseline model itself
    confidence: str = "top1"  # top1 | margin (classes) | distance (a click model's probability)
    threshold: float | None = None  # None: chosen on the validation split for max_quality_drop
    max_quality_drop: float = 0.005  # validation quality the cascade may lose against the expensive model
    decision: float = 0.5  # distance: the click probability at which the decision flips

    applies: ClassVar = {
        "max_quality_drop": ("threshold=None (the threshold is then chosen on the validation split)",
                             lambda r: r.threshold is None),
        "decision": ("confidence='distance'", lambda r: r.confidence == "distance"),
    }

    def __post_init__(self):
        object.__setattr__(self, "cheap", _recipe(self.cheap, "cheap"))
        object.__setattr__(self, "expensive", _recipe(self.expensive, "expensive"))
        if self.cheap is None:
            raise ValueError("Cascade.cheap is required: the recipe that makes the cheap model, e.g. Distill()")
        for field in ("cheap", "expensive"):
            if isinstance(getattr(self, field), Cascade):
                raise ValueError(f"Cascade.{field} is itself a cascade; give a model recipe (Distill, Quantize, "
                                 f"Chain, ...) and chain cascades by hand")
        _check_choice("Cascade", "confidence", self.confidence, CONFIDENCES)
        if self.threshold is not None:
            _check_range("Cascade", "threshold", self.threshold, 0.0, 1.0)
        _check_range("Cascade", "max_quality_drop", self.max_quality_drop, 0.0, 1.0)
        _check_range("Cascade", "decision", self.decision, 0.0, 1.0, high_open=True)
        if self.decision <= 0:
            raise ValueError(f"Cascade.decision={self.decision!r} must be a probability in (0, 1), e.g. 0.5")
        self._check_applies()

    @property
    def stage(self) -> int:
        return self.cheap.stage

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for field in ("cheap", "expensive"):
            if data.get(field) is not None:
                data[field] = data[field].to_dict()
        return data

    def params(self) -> dict[str, Any]:
        data = super().params()
        data.update(cheap=self.cheap.to_dict(), expensive=None if self.expensive is None else self.expensive.to_dict())
        return data
