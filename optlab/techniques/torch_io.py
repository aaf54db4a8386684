"""How torch-level techniques take a model in, feed it, and save what they make.

Shared by quantize, compile, prune, distill, INC and the ONNX exporter: which recipes need a
torch.nn.Module (`NEEDS_MODULE`, asked through `needs_module` by callers that must refuse such a
recipe for an exported model before any work, e.g. the CLI) and the check itself, example
inputs in the dataset's input order, a positional wrapper for exporters, and saving a module
so that a fresh process can load it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optlab.models.candidate import OnnxModel
from optlab.models.training import to_tensors
from optlab.recipes.recipe import Chain, Compile, Distill, OnDevice, Prune, Quantize, UnsupportedRecipe

TEXT_AXES = ("input_ids", "attention_mask", "token_type_ids")


def input_names(data: Any) -> list[str]:
    return list(data.input_names)


def example_batch(data: Any, n: int = 2, split: str = "calibration") -> dict[str, np.ndarray]:
    rows = getattr(data, split)
    return {k: v[:n] for k, v in rows.inputs.items()}


# The recipes whose techniques work on a torch.nn.Module only (each calls `require_module`), by
# recipe type and runtime (None: every runtime of the type), with why in a few words.
NEEDS_MODULE: dict[tuple[type, str | None], str] = {
    (Prune, None): "it changes or retrains the network's weights",
    (Distill, None): "it changes or retrains the network's weights",
    (Quantize, "torch"): "runtime=torch quantizes torch modules",
    (Quantize, "inc"): "runtime=inc quantizes torch modules",
    (Compile, "torch.compile"): "torch.compile compiles torch modules",
    (OnDevice, None): "it runs the torch module on the GPU",
}


def needs_module(recipe: Any) -> str | None:
    """Why `recipe` needs the network as a torch.nn.Module (None if an ONNX model takes it too);
    a Chain needs one when any of its steps does."""
    if isinstance(recipe, Chain):
        return next((why for why in map(needs_module, recipe.steps) if why), None)
    kind = type(recipe)
    return NEEDS_MODULE.get((kind, getattr(recipe, "runtime", None))) or NEEDS_MODULE.get((kind, None))


def require_module(model: Any, recipe: Any) -> Any:
    """Torch-level recipes need an nn.Module, not an exported graph."""
    import torch  # lazy: importing this module (e.g. for `needs_module`) must not load torch

    if isinstance(model, OnnxModel):
        why = needs_module(recipe)
        raise UnsupportedRecipe(
            f"{recipe.name} works on a torch.nn.Module{f' ({why})' if why else ''} but got an ONNX model "
            f"({model.path}); put torch-level steps before ONNX export/runtime steps in the Chain")
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedRecipe(f"{recipe.name} needs a torch.nn.Module; got {type(model).__name__}")
    return model


def positional_tensors(batch: dict[str, np.ndarray], names: list[str]) -> tuple:
    """The batch as torch tensors in `names` order, for exporters that call models positionally."""

    tensors = to_tensors(batch)
    return tuple(tensors[name] for name in names)


def positional(module: Any, names: list[str]) -> Any:
    """Wrap a keyword-input model (`model(**inputs)`) so exporters can call it positionally."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self, inner, keys):
            super().__init__()
            self.inner = inner
            self.keys = tuple(keys)

        def forward(self, *xs):
            return self.inner(**dict(zip(self.keys, xs, strict=False)))

    return Positional(module, names).eval()


def save_module(module: Any, path: Path, original: Any = None) -> dict[str, Any]:
    """Save the whole module so a fresh process can torch.load it; returns extra loader options.

    Modules that do not pickle whole (torchao's int8 tensors hold partials) are saved as a
    state_dict plus a weightless skeleton of `original` (meta tensors) to load it into."""
    import copy

    import torch

    module.__dict__.pop("save", None)  # INC attaches a bound `save` that drags the fp32 model along
    for sub in module.modules():  # INC weight-only layers cache a dequantized fp32 `weight` after a call
        if "qweight" in getattr(sub, "_buffers", {}) and "weight" in sub.__dict__:
            del sub.__dict__["weight"]
    try:
        torch.save(module, path)
        return {}
    except Exception:
        if original is None:
            raise
    torch.save(module.state_dict(), path)
    skeleton = path.with_name(path.stem + ".skeleton.pt")
    torch.save(copy.deepcopy(original).to("meta"), skeleton)
    return {"skeleton": str(skeleton)}
