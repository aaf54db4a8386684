"""The explorer's answer (explore) on rows from one and from two machines: no widgets."""
import pandas as pd

from optlab.views.explore import ExplorerState, explore
from optlab.views.plots import pareto_chart

EPYC = dict(cpu_model="AMD EPYC 7B13", cpu_flags="avx2", cores=2)


def rows(*nodes):
    return pd.DataFrame([{"candidate": f"{name}@{node}", "family": family, "status": "ok", "p99_ms": p99,
                          "quality": 0.95 - drop, "quality_drop": drop, "throughput_per_s": 1000 / p99,
                          "node": node, **EPYC}
                         for node in nodes
                         for name, family, p99, drop in (("baseline", "baseline", 4.0, 0.0),
                                                         ("int8", "quantization", 2.0, 0.005))])


def test_one_machine_gets_no_machine_column_and_a_recommendation():
    shown = explore(rows("a"), ExplorerState())
    assert "machine" not in shown.data.columns and shown.recommendation.candidate == "int8@a"


def test_two_machines_are_labelled_and_recommended_within_the_chosen_one():
    two = rows("a", "b")
    shown = explore(two, ExplorerState())
    assert shown.data["machine"].tolist() == ["a: AMD EPYC 7B13, 2 cores"] * 2 + ["b: AMD EPYC 7B13, 2 cores"] * 2
    assert shown.recommendation is None and "measured on 2 machines" in shown.note
    chosen = explore(two, ExplorerState(machine="b: AMD EPYC 7B13, 2 cores"))
    assert chosen.recommendation.candidate == "int8@b"
    assert chosen.data["recommended"].tolist() == [False, False, False, True]
    across = explore(two, ExplorerState(across_machines=True))
    assert "Compared across 2 machines" in across.recommendation.explanation
    assert "machine" in tooltip_fields(pareto_chart(chosen.data).to_dict())  # a point says which machine


def tooltip_fields(spec) -> set[str]:
    """Every field named in a tooltip anywhere in a Vega-Lite spec."""
    if isinstance(spec, list):
        return set().union(*map(tooltip_fields, spec)) if spec else set()
    if not isinstance(spec, dict):
        return set()
    found = {t.get("field") for t in spec.get("tooltip", []) if isinstance(t, dict)} \
        if isinstance(spec.get("tooltip"), list) else set()
    return found.union(*(tooltip_fields(v) for k, v in spec.items() if k != "tooltip"))
