"""`python -m optlab.bench ray`: its figures from a side-by-side frame (no cluster needed here)."""
import math

import pandas as pd

from optlab.bench.__main__ import BENCHES
from optlab.bench.ray_study import hours_for, overlaps, recipes, targets


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
    assert rows[0]["figure"] == 1.25 and "median over 2 candidates: 1.25x (range 1.00x-1.50x)" in rows[0]["sentence"]
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


def test_overlaps_are_found_per_node_only():
    rows = pd.DataFrame({"candidate": ["a", "b", "c", "d"], "node_id": ["n1", "n1", "n2", "n1"],
                         "slot_started_at": [0.0, 1.0, 0.5, 2.5], "slot_ended_at": [1.0, 2.0, 1.5, 3.0]})
    assert overlaps(rows) == []  # a ends as b starts; c is on another node
    rows.loc[3, "slot_started_at"] = 1.5  # d starts while b holds n1's slot
    assert overlaps(rows) == [("n1", "b", "d")]


def test_two_node_and_scaling_sentences():
    walls = {"in_process_s": 10.0, "ray_s": 12.0, "ray_start_s": 20.0, "two_nodes_s": 8.0,
             "two_nodes_start_s": 25.0, "per_candidate_build_s": 1.0, "per_candidate_measure_s": 2.0,
             "per_candidate_slot_s": 3.6}
    two = pd.DataFrame({"candidate": ["a", "b"], "node_id": ["n1", "n2"], "slot_started_at": [0.0, 0.0],
                        "slot_ended_at": [1.0, 1.0]})
    rows = targets(side(), walls, two)
    assert rows[2]["figure"] == 1.5 and "2 nodes measured; measurements overlapping on a node: 0" in rows[2]["sentence"]
    assert "mechanism, not a speed-up" in rows[2]["sentence"]
    assert rows[3]["figure"] == hours_for(1000, 32, 3.6, 20.0) == (20.0 + 32 * 3.6) / 3600
    assert "N=1: 1.01 h" in rows[3]["sentence"] and "the build's share, 28%" in rows[3]["sentence"]  # 1.0 of 3.6 s
    assert "nan" not in " ".join(r["sentence"] for r in rows)
