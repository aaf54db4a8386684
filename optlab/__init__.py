"""optlab: see and measure inference optimization.

The public API: verbs and types, plus a few namespaces the walkthroughs call through. Every
name is imported lazily, so `import optlab` stays light (torch, onnxruntime and altair load
only when something that needs them is used):

    import optlab as ol
    data = ol.load_dataset("bids", smoke=True)
    model = ol.zoo.get("bids", data=data, smoke=True)
    study = ol.Study(model, data, [ol.Quantize("dynamic-int8", runtime="onnxruntime")],
                     workload=ol.Workload.smoke())
    study.run()

The package is layered, bottom to top: data -> models -> recipes -> instruments ->
techniques -> serving -> study -> views -> cli; a module never imports one above it.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute): the verbs and types.
_EXPORTS = {
    "load_dataset": ("optlab.data.datasets", "load"),
    "DATASETS": ("optlab.data.datasets", "DATASETS"),
    "Dataset": ("optlab.data.datasets", "Dataset"),
    "Candidate": ("optlab.models.candidate", "Candidate"),
    "Recipe": ("optlab.recipes.recipe", "Recipe"),
    "Quantize": ("optlab.recipes.recipe", "Quantize"),
    "Compile": ("optlab.recipes.recipe", "Compile"),
    "Prune": ("optlab.recipes.recipe", "Prune"),
    "Distill": ("optlab.recipes.recipe", "Distill"),
    "Chain": ("optlab.recipes.recipe", "Chain"),
    "Cascade": ("optlab.recipes.cascade", "Cascade"),
    "OnDevice": ("optlab.recipes.recipe", "OnDevice"),
    "UnsupportedRecipe": ("optlab.recipes.recipe", "UnsupportedRecipe"),
    "ONNX_RECIPES": ("optlab.recipes.presets", "ONNX_RECIPES"),
    "OPTIMUM_RECIPES": ("optlab.recipes.presets", "OPTIMUM_RECIPES"),
    "sweep": ("optlab.recipes.sweeps", "sweep"),
    "Workload": ("optlab.instruments.latency", "Workload"),
    "measure": ("optlab.instruments.latency", "measure"),
    "evaluate": ("optlab.instruments.quality", "evaluate"),
    "gate": ("optlab.instruments.quality", "gate"),
    "apply": ("optlab.techniques.registry", "apply"),
    "Study": ("optlab.study.study", "Study"),
    "RunOptions": ("optlab.study.options", "RunOptions"),
    "RayExecutor": ("optlab.study.ray_executor", "RayExecutor"),  # imports ray only when used
    "Pricing": ("optlab.study.table", "Pricing"),
    "threshold_sweep": ("optlab.study.cascade", "threshold_sweep"),
    "TradeoffExplorer": ("optlab.views.widgets", "TradeoffExplorer"),
    "LiveChart": ("optlab.views.widgets", "LiveChart"),
    "write_report": ("optlab.views.report", "write_report"),
    "readable": ("optlab.views.tables", "readable"),
}
# namespace -> module: the helpers the walkthroughs reach through (`ol.zoo.get(...)`).
_NAMESPACES = {
    "recipes": "optlab.recipes",
    "zoo": "optlab.models.zoo",
    "reference": "optlab.data.reference",
    "user_models": "optlab.models.user_models",
    "hf_folder": "optlab.models.hf_folder",
    "onnx_signature": "optlab.models.onnx_signature",
    "environment": "optlab.instruments.environment",
    "pipeline": "optlab.instruments.pipeline",
    "portability": "optlab.instruments.portability",
    "costs": "optlab.study.costs",
    "reshape": "optlab.study.reshape",
    "plots": "optlab.views.plots",
    "cascade_charts": "optlab.views.cascade_charts",
}

__all__ = [*_EXPORTS, *_NAMESPACES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _NAMESPACES:
        value = importlib.import_module(_NAMESPACES[name])
    else:
        raise AttributeError(f"module 'optlab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
