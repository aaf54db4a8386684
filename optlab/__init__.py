"""optlab: see and measure inference optimization.

The public API, re-exported lazily (modules share the names of their verbs: `ol.measure.measure`) so `import optlab` stays light (torch, onnxruntime and
altair load only when something that needs them is used):

    import optlab as ol
    data = ol.load_dataset("bids", smoke=True)
    model = ol.zoo.get("bids", data=data, smoke=True)
    study = ol.Study(model, data, [ol.Quantize("dynamic-int8", runtime="onnxruntime")],
                     workload=ol.Workload.smoke())
    study.run()
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": ("optlab.data", "load"),
    "DATASETS": ("optlab.data", "DATASETS"),
    "Dataset": ("optlab.data", "Dataset"),
    "Candidate": ("optlab.candidate", "Candidate"),
    "Quantize": ("optlab.recipes", "Quantize"),
    "Compile": ("optlab.recipes", "Compile"),
    "Prune": ("optlab.recipes", "Prune"),
    "Distill": ("optlab.recipes", "Distill"),
    "Chain": ("optlab.recipes", "Chain"),
    "apply": ("optlab.recipes", "apply"),
    "UnsupportedRecipe": ("optlab.recipes", "UnsupportedRecipe"),
    "sweep": ("optlab.sweeps", "sweep"),
    "Workload": ("optlab.measure", "Workload"),
    "gate": ("optlab.evaluate", "gate"),
    "Study": ("optlab.study", "Study"),
    "TradeoffExplorer": ("optlab.widgets", "TradeoffExplorer"),
    "LiveChart": ("optlab.widgets", "LiveChart"),
    "write_report": ("optlab.report", "write_report"),
}
_MODULES = ("data", "zoo", "recipes", "measure", "evaluate", "study", "store", "costs", "frontier", "plots",
            "widgets", "report", "pipeline", "sweeps", "training", "environment", "user_models", "reshape",
            "portability", "agreement", "user_inputs", "onnx_signature", "runtimes")

__all__ = [*_EXPORTS, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _MODULES:
        value = importlib.import_module(f"optlab.{name}")
    else:
        raise AttributeError(f"module 'optlab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
