"""`python -m optlab.bench ray`: its figures from a side-by-side frame (no cluster needed here)."""
import math

import pandas as pd

from optlab.bench.__main__ import BENCHES
from optlab.bench.ray_study import recipes, targets


def side(ray_status="ok", ray_quality=0.9):
    frame = pd.DataFrame({"candidate": ["baseline", "a", "b"], "status": ["ok", "ok", "error"],
                          "ray_status": ["ok", ray_status, "error"], "p50_ms": [1.0, 2.0, None],
                          "ray_p50_ms": [1.5, 2.0, None], "quality": [0.9, 0.9, None],
                          "ray_quality": [0.9, ray_quality, None]})
    frame["ray_over_in_process"] = frame["ray_p50_ms"] / frame["p50_ms"]
    return frame


def test_figures_are_ratios_of_the_same_run_and_never_nan():
    rows = targets(side(), {"in_process_s": 10.0, "ray_s": 12.5, "ray_start_s": 20.0})
    assert [r["met"] for r in rows] == [None, None]  # not judged: no figure is set by the issue
    assert rows[0]["figure"] == 1.25 and "median over 2 candidates: 1.25x" in rows[0]["sentence"]
    assert "identical" in rows[0]["sentence"] and rows[1]["figure"] == 1.25
    assert "nan" not in " ".join(r["sentence"] for r in rows)
    assert "DIFFER" in targets(side(ray_quality=0.8), {"in_process_s": 1.0, "ray_s": 1.0, "ray_start_s": 1.0})[0][
        "sentence"]
    empty = side().assign(ray_over_in_process=math.nan)
    first = targets(empty, {"in_process_s": 1.0, "ray_s": 1.0, "ray_start_s": 1.0})[0]
    assert first["figure"] is None and "n/a" in first["sentence"]


def test_registered_with_twelve_distinct_recipes():
    assert BENCHES["ray"] == "optlab.bench.ray_study"
    assert len({r.name for r in recipes(smoke=False)}) == 12 and len(recipes(smoke=True)) == 3
