"""Sweeps: one recipe varied over parameter ranges -> a list of recipes for a study.

    sweep(Prune(0.5, structured=True), sparsity=SPARSITIES)     # accuracy-vs-sparsity curve
    sweep(Distill(), temperature=[1, 2, 4, 8], alpha=[0.5, 0.9])  # a grid (every combination)
    sweep(Chain(Distill(), Prune(0.5)), sparsity=[0.3, 0.6])      # the steps that have the field

Every value is validated by the recipe itself (dataclasses.replace runs __post_init__).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Iterable

from optlab.recipes.recipe import Chain, Recipe

SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TEMPERATURES = (1.0, 2.0, 4.0, 8.0)


def sweep(recipe: Recipe, **ranges: Iterable[Any]) -> list[Recipe]:
    """Copies of `recipe` with each field set to each value of its range.

    Several ranges make a grid, varied in the order given (the last one fastest).
    Duplicates are dropped, so each recipe name (a study's row key) appears once."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"sweep() needs a Recipe (Prune, Distill, Quantize, ...); got {recipe!r}")
    if not ranges:
        raise ValueError("sweep() needs at least one range, e.g. sweep(Prune(0.5), sparsity=[0.1, 0.5, 0.9])")
    values = {}
    for field, range_ in ranges.items():
        if isinstance(range_, (str, bytes)) or not isinstance(range_, Iterable):
            raise ValueError(f"sweep range {field}={range_!r} must be a list of values, e.g. {field}=[...]")
        values[field] = list(range_)
        if not values[field]:
            raise ValueError(f"sweep range {field}=[] is empty; give at least one value")
        _check_field(recipe, field)
    out: list[Recipe] = []
    seen: set[str] = set()
    for combo in itertools.product(*values.values()):
        varied = _replace(recipe, dict(zip(values, combo, strict=False)))
        if varied.name not in seen:
            seen.add(varied.name)
            out.append(varied)
    return out


def _fields(recipe: Recipe) -> set[str]:
    return {f.name for f in dataclasses.fields(recipe)}


def _check_field(recipe: Recipe, field: str) -> None:
    steps = recipe.steps if isinstance(recipe, Chain) else (recipe,)
    if not any(field in _fields(step) for step in steps):
        valid = sorted(set().union(*(_fields(step) for step in steps)))
        raise ValueError(f"cannot sweep {field!r}: {recipe.name} has no such field; "
                         f"fields you can sweep: {', '.join(valid)}")


def _replace(recipe: Recipe, changes: dict[str, Any]) -> Recipe:
    if isinstance(recipe, Chain):
        return Chain(*(_replace_step(step, changes) for step in recipe.steps))
    return dataclasses.replace(recipe, **changes)


def _replace_step(step: Recipe, changes: dict[str, Any]) -> Recipe:
    own = {k: v for k, v in changes.items() if k in _fields(step)}
    return dataclasses.replace(step, **own) if own else step
