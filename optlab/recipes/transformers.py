"""Recipes for Hugging Face transformers through optimum (ONNX Runtime): export, graph
optimization with the transformer fusions, and dynamic or static int8 quantization.

`Optimum(level="O2")` exports the model with optimum's ONNX exporter and runs `ORTOptimizer`
at that level; `Optimum(level="O2", quantize="dynamic-int8")` then quantizes the optimized
graph with `ORTQuantizer` and the `AutoQuantizationConfig` preset for this CPU (`preset="auto"`
picks avx512_vnni / avx512 / avx2 / arm64 from the CPU's flags; the choice is in the row).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from optlab.recipes.recipe import STAGE_RUNTIME, Recipe, _check_choice, _check_range

# optimum's levels: O1 general ORT fusions; O2 + transformer fusions (attention, GELU, LayerNorm,
# embedding-LayerNorm); O3 = O2 + fast-GELU approximation. O4 (fp16) is for GPUs only.
OPTIMUM_LEVELS = ("O1", "O2", "O3")
OPTIMUM_QUANTIZE = ("none", "dynamic-int8", "static-int8")
OPTIMUM_PRESETS = ("auto", "avx512_vnni", "avx512", "avx2", "arm64")


@dataclass(frozen=True)
class Optimum(Recipe):
    """A Hugging Face model through optimum: ONNX export, `ORTOptimizer` at `level`, then
    optionally `ORTQuantizer` int8 (dynamic, or static calibrated on the calibration split)."""

    kind: ClassVar[str] = "optimum"
    family: ClassVar[str] = "compilation"
    shown: ClassVar[tuple[str, ...]] = ("level",)

    level: str = "O2"
    quantize: str = "none"  # none | dynamic-int8 | static-int8
    preset: str = "auto"  # AutoQuantizationConfig preset; auto = from the CPU's flags
    per_channel: bool = False
    calibration: str = "minmax"  # static: minmax | entropy | percentile
    calibration_samples: int = 128

    applies: ClassVar = {
        "preset": ("an int8 quantize", lambda r: r.quantize != "none"),
        "per_channel": ("an int8 quantize", lambda r: r.quantize != "none"),
        "calibration": ("quantize='static-int8'", lambda r: r.quantize == "static-int8"),
        "calibration_samples": ("quantize='static-int8'", lambda r: r.quantize == "static-int8"),
    }

    def __post_init__(self):
        if self.level == "O4":
            raise ValueError("Optimum.level='O4' is optimum's fp16 level for GPUs; on the CPU choose one of "
                             "'O1', 'O2', 'O3'")
        _check_choice("Optimum", "level", self.level, OPTIMUM_LEVELS)
        _check_choice("Optimum", "quantize", self.quantize, OPTIMUM_QUANTIZE)
        _check_choice("Optimum", "preset", self.preset, OPTIMUM_PRESETS)
        _check_choice("Optimum", "per_channel", self.per_channel, (False, True))
        _check_choice("Optimum", "calibration", self.calibration, ("minmax", "entropy", "percentile"))
        _check_range("Optimum", "calibration_samples", self.calibration_samples, 1, 100_000, integer=True)
        self._check_applies()

    @property
    def stage(self) -> int:
        return STAGE_RUNTIME
