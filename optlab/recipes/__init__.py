"""Recipes say *what* to do to a model (small frozen dataclasses); sweeps build lists of them."""
from optlab.recipes.cascade import Cascade
from optlab.recipes.openvino import OVWeights
from optlab.recipes.presets import ONNX_RECIPES
from optlab.recipes.recipe import (
                                   Chain,
                                   Compile,
                                   Distill,
                                   OnDevice,
                                   Prune,
                                   Quantize,
                                   Recipe,
                                   UnsupportedRecipe,
                                   from_dict,
                                   from_json,
                                   parse,
)
from optlab.recipes.sweeps import sweep
from optlab.recipes.transformers import Optimum

__all__ = ["Recipe", "Quantize", "Compile", "Prune", "Distill", "OnDevice", "Chain", "Cascade", "UnsupportedRecipe",
           "from_dict", "from_json", "parse", "sweep", "ONNX_RECIPES", "Optimum", "OVWeights"]
