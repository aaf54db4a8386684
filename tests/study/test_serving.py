"""Study.serve: throughput at the SLA for a study's candidates, joined onto its results."""
import math

import pytest

from optlab.instruments.latency import Workload
from optlab.recipes.recipe import Compile
from optlab.serving.policies import NoBatching
from optlab.serving.sla import SlaSearch
from optlab.study.study import RunOptions, Study

FAST = Workload.smoke(threads=1, throughput_batch_sizes=(8,), memory=False, cold_start=False)
# Short probes at a load a tiny model meets easily; the search stops after a few probes.
SEARCH = SlaSearch(max_p99_ms=50.0, probe_s=0.3, rel_tol=0.5, start_per_s=400.0, max_probes=3, confirm_failures=0)


@pytest.fixture(scope="module")
def served(tiny_bids, tmp_path_factory):
    model, data = tiny_bids
    study = Study(model, data, [Compile(runtime="onnxruntime")], workload=FAST,
                  results_dir=tmp_path_factory.mktemp("served"), options=RunOptions(progress=False))
    study.run()
    events = []
    study.subscribe(events.append)
    table = study.serve(search=SEARCH, policies=[NoBatching()], n_requests=300)
    return study, table, events


def test_every_candidate_gets_its_throughput_at_the_sla(served):
    study, table, events = served
    assert list(table["candidate"]) and set(table["candidate"]) == set(study.results["candidate"])
    assert table["serving_error"].isna().all(), table["serving_error"].tolist()
    assert (table["throughput_at_sla_per_s"] >= SEARCH.start_per_s).all()  # the first probe passed at least
    assert (table["p99_at_sla_load_ms"] <= SEARCH.max_p99_ms).all()
    assert set(table["serving_policy"]) == {"none"}
    results = study.results
    for row in table.itertuples():
        joined = results.loc[results["candidate"] == row.candidate, "throughput_at_sla_per_s"].item()
        assert joined == row.throughput_at_sla_per_s
    assert len(events) == 1, "subscribers (the explorer) hear about the new figures, once"
    announced = {row["candidate"]: row["throughput_at_sla_per_s"] for row in events[0].rows}
    assert announced == table.set_index("candidate")["throughput_at_sla_per_s"].to_dict()


def test_recommend_by_served_throughput(served):
    study, table, _ = served
    choice = study.recommend(objective="served")
    served_per_s = table.set_index("candidate")["throughput_at_sla_per_s"]
    assert served_per_s[choice.candidate] == served_per_s.max()  # ties go to the smaller quality drop
    if choice.candidate != "baseline":
        ratio = served_per_s[choice.candidate] / served_per_s["baseline"]
        assert f"{ratio:.2f}x better than the baseline ({served_per_s['baseline']:.4g}/s)" in choice.explanation


def test_explorer_offers_and_draws_served_throughput(served):
    from optlab.views.widgets import SERVED_X, TradeoffExplorer

    study, table, _ = served
    explorer = TradeoffExplorer(study, x=SERVED_X)
    try:
        assert SERVED_X in [value for _, value in explorer.x_axis.options]
        assert explorer.x == SERVED_X
        drawn = explorer.chart_data.set_index("candidate")[SERVED_X]
        assert drawn.to_dict() == table.set_index("candidate")["throughput_at_sla_per_s"].to_dict()
        assert "served" in explorer.chart.to_json()
    finally:
        explorer.close()


def test_explorer_without_serving_figures_offers_only_loop_axes(tiny_bids, tmp_path):
    from optlab.views.widgets import SERVED_X, TradeoffExplorer

    model, data = tiny_bids
    study = Study(model, data, [], workload=FAST, results_dir=tmp_path, options=RunOptions(progress=False))
    study.run()
    explorer = TradeoffExplorer(study)
    try:
        assert SERVED_X not in [value for _, value in explorer.x_axis.options]
    finally:
        explorer.close()


def test_bad_input(tiny_bids, tmp_path, served):
    model, data = tiny_bids
    empty = Study(model, data, [], workload=FAST, results_dir=tmp_path, options=RunOptions(progress=False))
    with pytest.raises(ValueError, match="call study.run"):
        empty.serve(search=SEARCH)
    study, _, _ = served
    with pytest.raises(ValueError, match="no successful candidate named 'nope'"):
        study.serve(candidates=["nope"], search=SEARCH)
    with pytest.raises(ValueError, match="max_p99_ms"):
        study.serve(max_p99_ms=-1)
    assert not math.isnan(study.results["throughput_at_sla_per_s"].iloc[0])  # nothing lost by the refusals
