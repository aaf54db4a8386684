"""Pareto front and SLA recommendation on hand-made rows."""
import re

import pandas as pd
import pytest

from optlab.study.frontier import pareto_front, pareto_mask, recommend


def rows(*points, **extra):
    """points: (candidate, p99_ms, quality[, status])."""
    data = []
    for point in points:
        name, p99, quality, *status = point
        data.append({"candidate": name, "p99_ms": p99, "quality": quality, "status": status[0] if status else "ok"})
    return pd.DataFrame(data)


def test_front_drops_dominated_points_and_keeps_exact_ties():
    df = rows(("slow-good", 10.0, 0.95), ("fast-bad", 1.0, 0.80), ("mid", 5.0, 0.90),
              ("dominated", 6.0, 0.85),        # slower and worse than mid
              ("same-x-worse", 5.0, 0.88),     # same latency as mid, lower quality
              ("same-y-slower", 12.0, 0.95),   # same quality as slow-good, slower
              ("tie", 5.0, 0.90),              # exact tie with mid: both stay
              ("broken", 0.1, 0.99, "error"),  # error rows never count
              ("missing", None, 0.99))         # missing values never count
    front = pareto_front(df)
    assert front["candidate"].tolist() == ["fast-bad", "mid", "tie", "slow-good"]
    assert pareto_mask(df).sum() == 4


def test_front_directions_and_reference_rows():
    df = rows(("a", 1.0, 0.9), ("b", 2.0, 0.7), ("ref", 0.5, 0.95, "reference"))
    # maximise x, minimise y: b has larger x and smaller y -> dominates a
    assert pareto_front(df, minimize_x=False, maximize_y=False)["candidate"].tolist() == ["b"]
    assert pareto_front(df)["candidate"].tolist() == ["a"]
    assert pareto_front(df, include_reference=True)["candidate"].tolist() == ["ref"]
    with pytest.raises(ValueError, match="column 'cost' is not in the results"):
        pareto_front(df, x="cost")


def test_front_minimises_quality_when_the_metric_is_lower_is_better():
    # mae: 0.2 is better than 0.5; the fast, accurate row dominates the slow, inaccurate one
    df = rows(("fast-accurate", 1.0, 0.2), ("slow-inaccurate", 5.0, 0.5), ("slow-best", 9.0, 0.1))
    df["metric"] = "mae"
    assert pareto_front(df)["candidate"].tolist() == ["fast-accurate", "slow-best"]
    assert pareto_mask(df).tolist() == [True, False, True]
    df["metric"] = "accuracy"  # the same figures read as accuracy: higher is better
    assert pareto_front(df)["candidate"].tolist() == ["fast-accurate", "slow-inaccurate"]
    df["metric"] = "mae"
    assert pareto_front(df, maximize_y=True)["candidate"].tolist() == ["fast-accurate", "slow-inaccurate"]


def test_a_drop_in_the_metrics_units_never_reads_minus_zero():
    df = pd.DataFrame([
        {"candidate": "baseline", "status": "ok", "metric": "mae", "p99_ms": 10.0, "quality": 0.31,
         "quality_drop": 0.0, "cost_per_1m_usd": 2.0},
        {"candidate": "int8", "status": "ok", "metric": "mae", "p99_ms": 4.0, "quality": 0.31,
         "quality_drop": 0.0, "quality_drop_ci_low": -0.0, "quality_drop_ci_high": 0.0, "cost_per_1m_usd": 1.0},
        {"candidate": "pruned", "status": "ok", "metric": "mae", "p99_ms": 3.0, "quality": 0.45,
         "quality_drop": 0.14, "cost_per_1m_usd": 0.5},
    ])
    rec = recommend(df, max_quality_drop=0.05)
    assert rec.candidate == "int8"
    assert "quality drop 0 in mae (95% CI 0 to 0)" in rec.explanation
    assert "-0" not in rec.explanation and " pp" not in rec.explanation
    assert dict((r.candidate, r.reasons) for r in rec.rejected)["pruned"] == ("quality drop 0.14 > 0.05",)


def table():
    return pd.DataFrame([
        {"candidate": "baseline", "family": "baseline", "status": "ok", "p99_ms": 10.0, "quality": 0.95,
         "quality_drop": 0.0, "agreement": 1.0, "cost_per_1m_usd": 2.0, "size_bytes": 4e6},
        {"candidate": "int8", "family": "quantization", "status": "ok", "p99_ms": 4.0, "quality": 0.945,
         "quality_drop": 0.005, "quality_drop_ci_low": -0.002, "quality_drop_ci_high": 0.012, "agreement": 0.99,
         "cost_per_1m_usd": 0.8, "size_bytes": 1e6},
        {"candidate": "pruned", "family": "pruning", "status": "ok", "p99_ms": 3.0, "quality": 0.90,
         "quality_drop": 0.05, "agreement": 0.93, "cost_per_1m_usd": 0.5, "size_bytes": 2e6},
        {"candidate": "bf16", "family": "quantization", "status": "ok", "p99_ms": 6.0, "quality": 0.95,
         "quality_drop": 0.0, "agreement": 0.999, "cost_per_1m_usd": 1.0, "size_bytes": 2e6},
        {"candidate": "cuda", "family": "compilation", "status": "error", "error": "UnsupportedRecipe: no CUDA"},
    ])


def test_recommend_picks_cheapest_within_constraints_and_explains():
    rec = recommend(table(), max_p99_ms=5, max_quality_drop=0.01, objective="cost")
    assert rec.met and rec.candidate == "int8"
    assert "int8" in rec.explanation and "cost per 1M" in rec.explanation and "2.50x" in rec.explanation
    assert "0.50 pp" in rec.explanation  # the drop in percentage points, with its interval
    reasons = {r.candidate: r.reasons for r in rec.rejected}
    assert reasons["pruned"] == ("quality drop 5.00 pp > 1.00 pp",)
    assert reasons["baseline"] == ("p99 10 ms > 5 ms",)
    assert "UnsupportedRecipe" in reasons["cuda"][0]
    assert set(rec.rejected_frame()["candidate"]) == {"baseline", "pruned", "bf16", "cuda"}
    # other objectives
    assert recommend(table(), max_quality_drop=0.01, objective="latency").candidate == "int8"
    assert recommend(table(), objective="size").candidate == "int8"
    assert recommend(table(), objective="cost").candidate == "pruned"
    assert recommend(table(), max_quality_drop=0.0, objective="cost").candidate == "bf16"


def test_recommend_explains_a_miss_and_the_closest():
    rec = recommend(table(), max_p99_ms=2, max_quality_drop=0.01)
    assert not rec.met and rec.row is None
    assert rec.unmet == ("max_p99_ms",)
    assert "nothing meets p99 <= 2 ms" in rec.explanation and "pruned at 3 ms" in rec.explanation
    assert rec.closest["candidate"] == "int8"  # 4 ms is 1x over; pruned also breaks the quality limit
    rec = recommend(table(), max_p99_ms=3.5, max_quality_drop=0.01)
    assert not rec.met and rec.unmet == ()
    assert "none meets all" in rec.explanation


def test_cost_objective_falls_back_to_throughput_without_prices():
    df = table().drop(columns=["cost_per_1m_usd"]).assign(throughput_per_s=[100, 300, 500, 200, None])
    assert recommend(df, max_quality_drop=0.01).candidate == "int8"


def test_served_objective_ranks_by_throughput_at_the_sla_and_says_how_much_better():
    df = table().assign(throughput_at_sla_per_s=[2000.0, 8000.0, 16000.0, 1000.0, None])
    rec = recommend(df, max_quality_drop=0.01, objective="served")  # pruned serves most but drops 5 pp
    assert rec.candidate == "int8"
    assert "4.00x better than the baseline (2000/s), from separate measurements" in rec.explanation


@pytest.mark.parametrize("kwargs, message", [
    (dict(objective="speed"), "unknown objective 'speed'"),
    (dict(max_p99_ms=0), "positive latency in milliseconds"),
    (dict(max_p99_ms=-5), "positive latency in milliseconds"),
    (dict(max_quality_drop=1), "use 0.01 for 1 percentage point"),
    (dict(max_quality_drop=-0.01), "must be >= 0"),
    (dict(min_agreement=99), r"fraction in \[0, 1\]"),
])
def test_bad_constraints_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        recommend(table(), **kwargs)


def test_empty_or_all_failed():
    with pytest.raises(ValueError, match="no results yet"):
        recommend(pd.DataFrame(columns=["candidate", "status", "p99_ms", "quality"]))
    with pytest.raises(ValueError, match="no successful candidate"):
        recommend(table()[table()["status"] == "error"])


def test_front_with_duplicate_index_labels():
    df = pd.concat([rows(("a", 1.0, 0.8)), rows(("b", 2.0, 0.7)), rows(("c", 3.0, 0.9))])  # index 0, 0, 0
    assert pareto_front(df)["candidate"].tolist() == ["a", "c"]


# --- one owner for SLA membership ---------------------------------------------------------

def vega_eval(expression: str, datum: dict, params: dict) -> bool:
    """Evaluate the small subset of Vega's expression language Constraint renders, with Vega's
    semantics for missing fields (undefined/null compare false, isValid is false)."""
    import math
    import re

    class Value:
        def __init__(self, v):
            self.v = None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        def _cmp(self, other, op):
            o = other.v if isinstance(other, Value) else other
            return False if self.v is None or o is None else op(self.v, o)

        def __gt__(self, o):
            return self._cmp(o, lambda a, b: a > b)

        def __lt__(self, o):
            return self._cmp(o, lambda a, b: a < b)

        def __ge__(self, o):
            return self._cmp(o, lambda a, b: a >= b)

        def __le__(self, o):
            return self._cmp(o, lambda a, b: a <= b)

        def __ne__(self, o):
            return self.v != (o.v if isinstance(o, Value) else o)

    python = re.sub(r"datum\.(\w+)", r"D('\1')", expression)
    python = python.replace("&&", " and ").replace("||", " or ").replace("!isValid", " not isValid")
    scope = {"D": lambda k: Value(datum.get(k)), "isValid": lambda v: v.v is not None, **params}
    return bool(eval(python, scope))  # noqa: S307 - a test-only evaluator of expressions we rendered


SLA_ROWS = [
    {"candidate": "fast", "family": "quantization", "p99_ms": 3.0, "quality_drop": 0.001},
    {"candidate": "slow", "family": "quantization", "p99_ms": 30.0, "quality_drop": 0.001},
    {"candidate": "lossy", "family": "pruning", "p99_ms": 3.0, "quality_drop": 0.2},
    {"candidate": "baseline", "family": "baseline", "p99_ms": 5.0, "quality_drop": None},
    {"candidate": "untimed", "family": "quantization", "p99_ms": None, "quality_drop": 0.0},
    {"candidate": "unscored", "family": "distillation", "p99_ms": 1.0, "quality_drop": None},
    {"candidate": "starved", "family": "compilation", "p99_ms": 2.0, "quality_drop": 0.0,
     "throughput_at_sla_per_s": 0.0, "serving_max_p99_ms": 10.0},   # served 0/s within 10 ms
    {"candidate": "served", "family": "compilation", "p99_ms": 2.0, "quality_drop": 0.0,
     "throughput_at_sla_per_s": 900.0, "serving_max_p99_ms": 10.0},
]


@pytest.mark.parametrize("limits", [dict(max_p99_ms=10.0, max_quality_drop=0.01), dict(max_p99_ms=4.0),
                                    dict(max_quality_drop=0.05), dict(max_p99_ms=20.0), dict(min_agreement=0.9)])
def test_constraint_text_and_vega_expression_agree_on_every_row(limits):
    from optlab.study.frontier import MEETS, sla_constraints, sla_status, vega_outside

    rules = sla_constraints(**limits)
    expression = vega_outside(rules)
    params = {rule.name: rule.limit for rule in rules}
    for row in SLA_ROWS:
        row = {"agreement": 0.95 if row["candidate"] != "lossy" else 0.5, **row}
        meets = sla_status(row, rules) == MEETS
        assert meets == (not vega_eval(expression, row, params)), (row["candidate"], limits)


def test_constraint_rules_missing_figures_and_serving_at_zero():
    from optlab.study.frontier import FAILS, MEETS, NOT_MEASURED, Constraint, meeting, sla_constraints

    p99 = Constraint("max_p99_ms", 10.0)
    states = {r["candidate"]: p99.judge(r)[0] for r in SLA_ROWS}
    assert states["untimed"] == NOT_MEASURED and states["slow"] == FAILS and states["fast"] == MEETS
    assert states["starved"] == FAILS and "serves 0/s within p99 <= 10 ms" in p99.judge(SLA_ROWS[6])[1]
    assert Constraint("max_p99_ms", 50.0).judge(SLA_ROWS[6])[0] == MEETS  # a looser limit was never searched
    drop = Constraint("max_quality_drop", 0.01)
    assert drop.judge(SLA_ROWS[3])[0] == MEETS and drop.judge(SLA_ROWS[5])[0] == NOT_MEASURED
    assert p99.vega_outside(param=False).startswith("!isValid(datum.p99_ms) || datum.p99_ms > 10.0")
    frame = pd.DataFrame(SLA_ROWS).assign(status="ok")
    assert meeting(frame, sla_constraints(max_p99_ms=10, max_quality_drop=0.01)) == {"fast", "baseline", "served"}
    with pytest.raises(ValueError, match="unknown constraint 'max_p50_ms'"):
        Constraint("max_p50_ms", 1.0)


def test_a_baseline_serving_nothing_within_the_sla_does_not_meet_it():
    df = table().assign(throughput_at_sla_per_s=[0.0, 800.0, 900.0, 700.0, None],
                        serving_max_p99_ms=[10.0, 10.0, 10.0, 10.0, None])
    rec = recommend(df, max_p99_ms=10, objective="latency")
    reasons = {r.candidate: r.reasons for r in rec.rejected}
    assert reasons["baseline"] == ("serves 0/s within p99 <= 10 ms under load (Study.serve)",)
    assert "among 3 of 4 candidates meeting p99 <= 10 ms" in rec.explanation


def test_candidates_without_the_objectives_figure_are_not_measured_not_failing():
    df = table().assign(cost_per_1m_usd=[2.0, None, 0.5, None, None])
    rec = recommend(df, max_p99_ms=100000, objective="cost")
    assert rec.candidate == "pruned" and set(rec.not_measured) == {"int8", "bf16"}
    assert "among 2 of 4 candidates meeting p99 <= 100000 ms (2 not measured for cost)" in rec.explanation
    assert {r.candidate for r in rec.rejected if r.meets_constraints} == {"baseline", "int8", "bf16"}


def test_the_ratio_to_the_baseline_compares_the_same_batch_size():
    """The 2.64x case: the candidate's best is batch 32, the baseline's batch-32 point was cut by the
    sweep budget; the ratio must not pit batch 32 against batch 1."""
    import json

    def sweep(points):
        return json.dumps([{"batch_size": b, "throughput_per_s": t} for b, t in points.items()])

    df = pd.DataFrame([
        {"candidate": "baseline", "family": "baseline", "status": "ok", "p99_ms": 2.0, "quality_drop": 0.0,
         "throughput_per_s": 2000.0, "throughput_batch_size": 1, "price_per_hour_usd": 0.1,
         "cost_per_1m_usd": 0.0278, "sweep_json": sweep({1: 2000.0, 8: 4000.0})},
        {"candidate": "openvino", "family": "compilation", "status": "ok", "p99_ms": 1.0, "quality_drop": 0.0,
         "throughput_per_s": 5280.0, "throughput_batch_size": 32, "price_per_hour_usd": 0.1,
         "cost_per_1m_usd": 0.0105, "sweep_json": sweep({1: 2500.0, 8: 5000.0, 32: 5280.0})},
    ])
    rec = recommend(df, objective="cost")
    assert rec.candidate == "openvino" and "2.64x" not in rec.explanation
    assert ("1.25x better than the baseline at batch 8; compared at batch 8, the largest both measured "
            "(the baseline's batch 32 point was not measured), from separate measurements") in rec.explanation
    df.loc[0, "sweep_json"] = sweep({64: 100.0})
    assert "the comparison with the baseline is not available: no batch size was measured for both" \
        in recommend(df, objective="cost").explanation


# --- one machine at a time ----------------------------------------------------------------------

FAST = dict(node="fast", cpu_model="Intel Xeon 8480+", cpu_flags="avx2 avx512f amx_tile", cores=56)
SLOW = dict(node="slow", cpu_model="AMD EPYC 7B13", cpu_flags="avx2", cores=2)
FAST_LABEL, SLOW_LABEL = "fast: Intel Xeon 8480+, 56 cores", "slow: AMD EPYC 7B13, 2 cores"


def two_machines():
    """The same three candidates measured on a fast and a slow node: on the slow one int8 is the
    cheapest; across both, the fast node's baseline would look cheaper than the slow node's int8."""
    rows = []
    for machine, scale in ((FAST, 1.0), (SLOW, 10.0)):
        for name, family, cost, drop_ in (("baseline", "baseline", 1.0, 0.0), ("int8", "quantization", 0.4, 0.005),
                                          ("pruned", "pruning", 0.3, 0.05)):
            rows.append({"candidate": f"{name}@{machine['node']}", "family": family, "status": "ok",
                         "p99_ms": 2.0 * cost * scale, "quality": 0.95 - drop_, "quality_drop": drop_,
                         "cost_per_1m_usd": cost * scale, **machine})
    return pd.DataFrame(rows)


def test_rows_from_two_machines_are_refused_in_one_line_naming_them_and_the_fix():
    with pytest.raises(ValueError) as error:
        recommend(two_machines(), max_quality_drop=0.01)
    message = str(error.value)
    assert "\n" not in message and "measured on 2 machines" in message
    assert f"'{FAST_LABEL}' (3 rows)" in message and f"'{SLOW_LABEL}' (3 rows)" in message
    assert f"machine='{FAST_LABEL}'" in message and "across_machines=True" in message


def test_machine_picks_one_machines_rows():
    rec = recommend(two_machines(), max_quality_drop=0.01, machine=SLOW_LABEL)
    assert rec.candidate == "int8@slow" and rec.machines == (SLOW_LABEL,)
    assert {r.candidate for r in rec.rejected} == {"baseline@slow", "pruned@slow"}
    assert "machines" not in rec.explanation


def test_across_machines_compares_anyway_and_says_so():
    rec = recommend(two_machines(), max_quality_drop=0.01, across_machines=True)
    assert rec.candidate == "int8@fast" and rec.machines == (FAST_LABEL, SLOW_LABEL)
    assert "Compared across 2 machines, as asked" in rec.explanation and SLOW_LABEL in rec.explanation


def test_one_machine_and_machine_choices_that_make_no_sense():
    one = two_machines().query("node == 'slow'")
    assert recommend(one, max_quality_drop=0.01).machines == (SLOW_LABEL,)  # one machine: nothing to ask
    failed_elsewhere = pd.concat([one, pd.DataFrame([{"candidate": "x", "status": "error", **FAST}])])
    assert recommend(failed_elsewhere, max_quality_drop=0.01).candidate == "int8@slow"  # only ok rows are ranked
    assert recommend(table(), objective="size").machines == ()  # hand-made rows that name no machine
    with pytest.raises(ValueError, match=re.escape(f"machine='nowhere' measured none of these rows; pass one of "
                                                   f"the machines here: '{FAST_LABEL}', '{SLOW_LABEL}'")):
        recommend(two_machines(), machine="nowhere")
    with pytest.raises(ValueError, match="give one of the two"):
        recommend(two_machines(), machine=FAST_LABEL, across_machines=True)
