"""Tidy views of a study's results for charts: recipe knobs as columns, the batch sweep in
long form, and ratios against the baseline. Pure DataFrame transforms; nothing is measured."""
from __future__ import annotations

import dataclasses
import json

import pandas as pd

from optlab.recipes.recipe import from_json


def with_params(df, *names: str):
    """Add the recipes' fields (e.g. "sparsity", "structured", "temperature") as columns,
    read from `recipe_json`; rows whose recipe lacks a field get None."""
    out = df.copy()
    parsed = [_fields(text) for text in out.get("recipe_json", [])]
    keys = names or sorted({k for p in parsed for k in p if k not in ("kind", "steps")})
    for key in keys:
        if key not in out.columns:
            out[key] = [p.get(key) for p in parsed]
    out["kind"] = [p.get("kind") for p in parsed]
    return out


def _fields(text) -> dict:
    """A recipe's fields, defaults included: its JSON leaves defaults out (a sweep over Distill's
    temperature stores no temperature for the default 4), so the recipe is rebuilt to read them."""
    if not isinstance(text, str) or not text:
        return {}
    data = json.loads(text)
    try:
        recipe = from_json(text)
    except (ValueError, KeyError, TypeError):  # not a recipe optlab knows (the baseline's marker)
        return data
    if not dataclasses.is_dataclass(recipe):
        return data
    return {**{f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)}, **data}


def batch_sweep(df):
    """The throughput sweep in long form: one row per (candidate, batch size), expanded from the
    `sweep_json` records a Measurement writes (rows without a sweep, such as errors, add none)."""
    import pandas as pd

    keep = [c for c in ("candidate", "family", "runtime", "status", "source") if c in df.columns]
    figures = ["batch_size", "throughput_per_s", "p50_ms", "p99_ms"]
    rows = []
    for _, row in df.iterrows():
        text = row.get("sweep_json")
        if not isinstance(text, str) or not text:
            continue
        for point in json.loads(text):
            rows.append({**{k: row[k] for k in keep}, **{f: point.get(f) for f in figures}})
    return pd.DataFrame(rows, columns=[*keep, *figures])


def _ratio_name(column: str) -> str:
    if column.endswith("_ms"):
        return f"speedup_{column[:-3]}"
    return "throughput_x" if column.startswith("throughput") else f"{column[:-3]}_ratio"


def versus_baseline(df, columns=("p50_ms", "p99_ms", "throughput_per_s", "size_mb")):
    """Each figure as a ratio to the baseline row's: `speedup_p50` (baseline p50 / p50),
    `throughput_x`, `size_ratio`; >1 speedup means faster than the baseline."""
    out = df.copy()
    base = df[df.get("recipe") == "baseline"] if "recipe" in df.columns else df.iloc[:0]
    if base.empty:
        raise ValueError("no baseline row in the results; run the study first (the baseline is measured with it)")
    base = base.iloc[0]
    for column in columns:
        name = _ratio_name(column)
        reference = float(pd.to_numeric(base.get(column), errors="coerce")) if column in df.columns else float("nan")
        if not reference > 0:  # not measured for the baseline (a sweep cut short): no ratio, the column says so
            out[name] = float("nan")
            continue
        values = pd.to_numeric(df[column], errors="coerce")
        out[name] = reference / values if column.endswith("_ms") else values / reference
    return out
