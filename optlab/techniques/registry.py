"""The one verb, `apply(recipe, model, data)`, dispatched by a registry of handlers.

A handler registers for a recipe type, and for one runtime where the type has several
(`@register(Quantize, runtime="onnxruntime")`). The handler modules are imported on the first
`apply`, so `import optlab` stays light. `apply` records what every candidate shares: the
threads it was built for and how long building it took.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any, Callable

from optlab.recipes.recipe import Chain, Recipe, UnsupportedRecipe
from optlab.techniques.workdirs import resolve_workdir

HANDLER_MODULES = ("optlab.techniques.quantize", "optlab.techniques.ort_quantize", "optlab.techniques.inc",
                   "optlab.techniques.compile", "optlab.techniques.prune", "optlab.techniques.distill",
                   "optlab.techniques.gpu", "optlab.techniques.optimum", "optlab.techniques.cascade")
_APPLIERS: dict[tuple[type, str | None], Callable[..., Any]] = {}


def register(recipe_type: type[Recipe], *, runtime: str | None = None) -> Callable:
    """Decorator for a technique's `apply_x(recipe, model, data, *, threads, workdir) -> Candidate`."""

    def wrap(fn: Callable) -> Callable:
        _APPLIERS[(recipe_type, runtime)] = fn
        return fn

    return wrap


def handler(recipe_type: type[Recipe], runtime: str | None = None) -> Callable[..., Any]:
    """The function registered for `recipe_type` (and `runtime`), importing the handler modules once."""
    key = (recipe_type, runtime)
    if key not in _APPLIERS and (recipe_type, None) not in _APPLIERS:
        for module in HANDLER_MODULES:
            importlib.import_module(module)
    fn = _APPLIERS.get(key) or _APPLIERS.get((recipe_type, None))
    if fn is None:
        where = f" with runtime={runtime!r}" if runtime else ""
        raise UnsupportedRecipe(f"no technique is registered for {recipe_type.__name__}{where}")
    return fn


def apply(recipe: Recipe, model: Any, data: Any, *, threads: int | None = None,
          workdir: str | Path | None = None) -> Any:
    """Apply `recipe` to `model` (never mutated) with `data` (a Dataset) -> Candidate.

    `threads` is the workload's thread count (the same for every candidate in a study);
    `workdir` is where artifacts (ONNX files, saved modules) are written (a fresh folder by default).
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"apply() needs a Recipe (Quantize, Compile, Prune, Distill, Chain); got {recipe!r}")
    fn = handler(type(recipe), getattr(recipe, "runtime", None))
    start = time.perf_counter()
    candidate = fn(recipe, model, data, threads=threads, workdir=resolve_workdir(workdir))
    meta = getattr(candidate, "meta", None)
    if isinstance(meta, dict):
        meta.setdefault("apply_s", round(time.perf_counter() - start, 3))
        meta.setdefault("threads", threads)
    return candidate


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
