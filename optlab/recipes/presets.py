"""Named lists of recipes that suit a kind of model."""
from __future__ import annotations

from optlab.recipes.recipe import Compile, Quantize
from optlab.recipes.transformers import Optimum

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

# What a Hugging Face sequence classifier (a save_pretrained folder) gets by default: optimum's
# export with general graph optimizations only (O1, fp32), the transformer fusions (O2, fp32),
# and O2 quantized to int8 by ORTQuantizer, dynamic and static (calibrated on held-out rows).
OPTIMUM_RECIPES = (
    Optimum("O1"),
    Optimum("O2"),
    Optimum("O2", quantize="dynamic-int8"),
    Optimum("O2", quantize="static-int8"),
)
