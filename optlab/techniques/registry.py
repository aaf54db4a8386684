"""The one verb, `apply(recipe, model, data)`, dispatched by a registry of handlers.

Each handler module registers its function for a recipe type (`@register(Quantize)`). The
handler modules are imported on the first `apply`, so `import optlab` stays light.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from optlab.recipes.recipe import Chain, Recipe, UnsupportedRecipe

HANDLER_MODULES = ("optlab.techniques.quantize", "optlab.techniques.compile", "optlab.techniques.prune",
                   "optlab.techniques.distill")
_APPLIERS: dict[type, Callable[..., Any]] = {}


def register(recipe_type: type[Recipe]) -> Callable:
    """Decorator for a technique's `apply_x(recipe, model, data, **context) -> Candidate`."""

    def wrap(fn: Callable) -> Callable:
        _APPLIERS[recipe_type] = fn
        return fn

    return wrap


def handler(recipe_type: type[Recipe]) -> Callable[..., Any]:
    """The function registered for `recipe_type` (importing the handler modules once)."""
    if recipe_type not in _APPLIERS:
        for module in HANDLER_MODULES:
            importlib.import_module(module)
    fn = _APPLIERS.get(recipe_type)
    if fn is None:
        raise UnsupportedRecipe(f"no technique is registered for {recipe_type.__name__}")
    return fn


def apply(recipe: Recipe, model: Any, data: Any, *, threads: int | None = None,
          workdir: str | Path | None = None) -> Any:
    """Apply `recipe` to `model` (never mutated) with `data` (a Dataset) -> Candidate.

    `threads` is the workload's thread count (the same for every candidate in a study);
    `workdir` is where artifacts (ONNX files, saved modules) are written.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"apply() needs a Recipe (Quantize, Compile, Prune, Distill, Chain); got {recipe!r}")
    workdir = Path(workdir) if workdir is not None else None
    return handler(type(recipe))(recipe, model, data, threads=threads, workdir=workdir)


@register(Chain)
def _apply_chain(recipe: Chain, model: Any, data: Any, *, threads=None, workdir=None):
    candidate = None
    current = model
    for step in recipe.steps:
        candidate = apply(step, current, data, threads=threads, workdir=workdir)
        current = candidate.model
    candidate.recipe = recipe
    candidate.name = recipe.name
    candidate.family = "chain"
    return candidate
