"""Tidy views of results: recipe knobs as columns, batch sweep in long form, ratios."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from optlab.recipes.recipe import Prune
from optlab.study.executor import BASELINE_RECIPE_JSON
from optlab.study.reshape import batch_sweep, versus_baseline, with_params


def _sweep(*points):
    return json.dumps([{"batch_size": b, "samples": 10, "p50_ms": p50, "p90_ms": p50, "p99_ms": p99,
                        "mean_ms": p50, "throughput_per_s": thr} for b, p50, p99, thr in points])


def _frame():
    return pd.DataFrame([
        {"candidate": "baseline", "recipe": "baseline", "family": "baseline", "status": "ok",
         "recipe_json": '{"kind": "baseline"}', "p50_ms": 2.0, "p99_ms": 4.0, "throughput_per_s": 100.0,
         "size_mb": 10.0, "sweep_json": _sweep((1, 2.0, 4.0, 500.0), (8, 3.0, 5.0, 2000.0))},
        {"candidate": "p", "recipe": Prune(0.5).name, "family": "pruning", "status": "ok",
         "recipe_json": Prune(0.5, structured=True).to_json(), "p50_ms": 1.0, "p99_ms": 2.0,
         "throughput_per_s": 300.0, "size_mb": 5.0, "sweep_json": _sweep((1, 1.0, 2.0, 1000.0))},
        {"candidate": "broken", "recipe": "x", "family": "pruning", "status": "error", "sweep_json": None},
    ])


def test_with_params_reads_recipe_fields():
    out = with_params(_frame(), "sparsity", "structured")
    assert out["sparsity"].tolist()[1] == 0.5 and out["structured"].tolist()[1] is True
    assert pd.isna(out["sparsity"].tolist()[0]) and out["kind"].tolist()[:2] == ["baseline", "prune"]


def test_batch_sweep_is_long_and_skips_missing_points():
    long = batch_sweep(_frame())
    assert list(long.columns[-4:]) == ["batch_size", "throughput_per_s", "p50_ms", "p99_ms"]
    assert list(zip(long["candidate"], long["batch_size"], long["throughput_per_s"], strict=True)) == [
        ("baseline", 1, 500.0), ("baseline", 8, 2000.0), ("p", 1, 1000.0)]


def test_versus_baseline_ratios():
    out = versus_baseline(_frame())
    assert out["speedup_p50"].tolist()[:2] == [1.0, 2.0]
    assert out["throughput_x"].tolist()[:2] == [1.0, 3.0] and out["size_ratio"].tolist()[:2] == [1.0, 0.5]
    with pytest.raises(ValueError, match="no baseline row"):
        versus_baseline(_frame().iloc[1:])


def test_versus_baseline_keeps_a_ratio_column_the_baseline_could_not_fill():
    # A throughput sweep cut short for the baseline: the column is there (callers select it) and empty.
    frame = _frame().drop(columns="throughput_per_s")
    out = versus_baseline(frame)
    assert "throughput_x" in out.columns and out["throughput_x"].isna().all()
    assert out["speedup_p50"].tolist()[:2] == [1.0, 2.0]


def test_with_params_reads_fields_left_at_their_defaults():
    """A recipe's JSON leaves defaults out: Distill's temperature 4 must still come out as 4 (03's
    sweep over temperature read "not measured" for it and its chart drew no point)."""
    import optlab as ol

    recipes = [*ol.sweep(ol.Distill(alpha=0.5), temperature=[4.0, 8.0]), ol.Distill(from_scratch=True)]
    df = pd.DataFrame({"candidate": ["baseline", *(r.name for r in recipes)],
                       "recipe_json": [BASELINE_RECIPE_JSON, *(r.to_json() for r in recipes)]})
    out = with_params(df, "temperature", "from_scratch")
    assert out["temperature"].tolist()[1:] == [4.0, 8.0, 4.0]
    assert out["from_scratch"].tolist()[1:] == [False, False, True]
    assert out["temperature"].isna().tolist()[0]  # the baseline is no recipe
