"""Named lists of recipes that suit a kind of model."""
from __future__ import annotations

from optlab.recipes.recipe import Compile, Quantize

# What applies to an ONNX-only model (a user's file): the runtime-level recipes.
ONNX_RECIPES = (
    Compile("onnxruntime", graph_level="basic"),
    Compile("onnxruntime", graph_level="all"),
    Compile("openvino"),
    Quantize("fp16", runtime="onnxruntime"),
    Quantize("dynamic-int8", runtime="onnxruntime"),
    Quantize("static-int8", runtime="onnxruntime", calibration="minmax"),
    Quantize("static-int8", runtime="onnxruntime", calibration="entropy", per_channel=True),
)
