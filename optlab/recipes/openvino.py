"""The recipe for a language model's OpenVINO weights: NNCF weight compression of the exported IR.

`OVWeights(bits=32)` is the IR as exported (fp32); `OVWeights(bits=8)` stores every weight matrix as
8-bit integers with one scale (and zero point, unless `sym`) per output channel; `OVWeights(bits=4)`
stores the linear layers as 4-bit integers in groups of `group_size` input channels, `ratio` of them in
int4 and the rest in int8, the embedding and the output head in int8 unless `all_layers`; `awq=True`
runs NNCF's data-aware AWQ (activation-aware scales, calibrated on token windows of the training text)
before rounding. What NNCF really stored is read back from the IR (`generation.openvino_ir`), never
assumed from the recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from optlab.recipes.recipe import STAGE_RUNTIME, Recipe, _check_choice, _check_range

OV_BITS = (32, 8, 4)


def _int4(recipe: OVWeights) -> bool:
    return recipe.bits == 4


@dataclass(frozen=True)
class OVWeights(Recipe):
    """NNCF weight compression of an OpenVINO causal-LM export: `bits` 32 (none), 8 (per channel) or 4
    (groups of `group_size` input channels, -1 = per channel; `ratio` of the layers in int4, the rest int8;
    `sym` without zero points; `awq` data-aware AWQ; `all_layers` the embedding and head in int4 too)."""

    kind: ClassVar[str] = "ov_weights"
    family: ClassVar[str] = "quantization"
    shown: ClassVar[tuple[str, ...]] = ("bits",)

    bits: int = 32
    group_size: int = 32
    ratio: float = 1.0
    sym: bool = False
    awq: bool = False
    all_layers: bool = False

    applies: ClassVar = {
        "group_size": ("bits=4 (int8 is always per output channel)", _int4),
        "ratio": ("bits=4 (the share of layers in int4, the rest int8)", _int4),
        "sym": ("bits=8 or bits=4", lambda r: r.bits in (8, 4)),
        "awq": ("bits=4 (NNCF runs AWQ for int4 only)", _int4),
        "all_layers": ("bits=4 (int8 compresses every layer already)", _int4),
    }

    def __post_init__(self):
        _check_choice("OVWeights", "bits", self.bits, OV_BITS)
        if self.group_size != -1:
            _check_range("OVWeights", "group_size", self.group_size, 2, 4096, integer=True)
        _check_range("OVWeights", "ratio", self.ratio, 0.0, 1.0)
        if _int4(self) and self.ratio == 0:
            raise ValueError("OVWeights.ratio=0 puts no layer in int4; use bits=8 for all-int8 weights, or a ratio "
                             "in (0, 1]")
        for name in ("sym", "awq", "all_layers"):
            _check_choice("OVWeights", name, getattr(self, name), (False, True))
        self._check_applies()

    @property
    def stage(self) -> int:
        return STAGE_RUNTIME

    @property
    def calibrated(self) -> bool:
        """Whether NNCF needs calibration windows (data-aware AWQ)."""
        return self.awq

    @property
    def precision(self) -> str:
        """The precision the recipe claims for the linear layers: "fp32", "int8" or "int4"."""
        return "fp32" if self.bits == 32 else f"int{self.bits}"

    @property
    def label(self) -> str:
        """A short label for a row: "fp32", "NNCF int8", "NNCF int4 g32 asym AWQ"."""
        if self.bits == 32:
            return "fp32"
        parts = [f"NNCF int{self.bits}"]
        if self.bits == 4:
            parts.append("per-channel" if self.group_size == -1 else f"g{self.group_size}")
            if self.ratio < 1:
                parts.append(f"ratio {self.ratio:g}")
        parts.append("sym" if self.sym else "asym")
        parts += [word for word, on in (("AWQ", self.awq), ("all layers", self.all_layers)) if on]
        return " ".join(parts)
