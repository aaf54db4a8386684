"""Re-timing before naming a winner: real candidates timed interleaved, the ratio's interval in the
words, "too close to call" for two candidates that are the same model, a noisy row's sentence."""
import time

import numpy as np
import pandas as pd
import pytest

from optlab.data import datasets
from optlab.instruments.interleaved import speed_ratio, time_interleaved
from optlab.instruments.latency import Workload
from optlab.models import zoo
from optlab.models.candidate import Candidate
from optlab.models.runtimes import load_onnxruntime
from optlab.recipes.recipe import Compile
from optlab.study import contenders
from optlab.study.explanation import Ratio, SideBySide
from optlab.study.frontier import recommend
from optlab.study.study import Study
from optlab.testing.graphs import constant_weight_mlp_inputs, constant_weight_mlp_onnx


def test_interleaved_runner_rotates_turns_and_finds_a_real_difference():
    def fast(batch):
        return batch

    def slow(batch):
        return time.sleep(0.002)

    run = time_interleaved({"fast": fast, "slow": slow}, [{"x": np.zeros(1)}], rounds=6, turn_s=0.01)
    assert run.rounds == 6 and all(len(turn) >= 3 for turn in run.samples_ns["fast"])
    estimate, low, high = speed_ratio(run, "fast", "slow")
    assert low <= estimate <= high and low > 2  # a no-op against a 2 ms sleep: apart even on a busy machine
    assert speed_ratio(run, "slow", "fast")[0] == pytest.approx(1 / estimate)
    with pytest.raises(ValueError, match="at least two callables"):
        time_interleaved({"fast": fast}, [{"x": np.zeros(1)}])


def two_rows(**extra):
    """A baseline and two candidates ranked a, b by cost."""
    base = {"status": "ok", "quality_drop": 0.0, "p99_ms": 1.0}
    return pd.DataFrame([{**base, "candidate": "baseline", "family": "baseline", "cost_per_1m_usd": 3.0},
                         {**base, "candidate": "a", "family": "compilation", "cost_per_1m_usd": 1.0},
                         {**base, "candidate": "b", "family": "compilation", "cost_per_1m_usd": 1.1, **extra}])


def test_the_same_onnx_file_twice_is_too_close_to_call(tmp_path):
    path = constant_weight_mlp_onnx(tmp_path / "mlp.onnx", features=16, hidden=64)
    candidates = {name: Candidate(name, load_onnxruntime(path, threads=1), runtime="onnxruntime")
                  for name in ("a", "b", "baseline")}
    def retime():
        return contenders.compare(candidates, constant_weight_mlp_inputs(rows=64), batch_size=8, threads=1,
                                  retiming=contenders.Retiming(rounds=8, turn_s=0.02))

    # One model against itself: no winner to name. A 95% interval excludes the truth 1 time in 20
    # by design, so a second, independent re-timing decides (both missing it: 1 in 400).
    side = retime()
    if not side.ratio("a", "b").too_close:
        side = retime()
    assert side.ratio("a", "b").too_close, side.ratio("a", "b")
    rec = recommend(two_rows(), max_p99_ms=10, side_by_side=side)
    assert rec.candidate == "a" and rec.too_close == ("a", "b")
    assert "Too close to call on this machine: a and b (" in rec.explanation
    assert "re-timed side by side at batch 8, 8 interleaved rounds" in rec.explanation
    assert "separate measurements" not in rec.explanation


def test_a_clearly_faster_runner_up_side_by_side_takes_the_lead():
    side = SideBySide(8, 8, (Ratio("a", "b", 0.5, 0.45, 0.55), Ratio("a", "baseline", 1.5, 1.4, 1.6),
                             Ratio("baseline", "b", 1 / 3, 0.3, 0.375)))
    rec = recommend(two_rows(), side_by_side=side)
    assert rec.candidate == "b"
    assert "ran 2.00x as fast as a (95% CI 1.82-2.22x), which the separate measurements ranked first" \
        in rec.explanation
    assert "3.00x faster than the baseline (95% CI 2.67-3.33x" in rec.explanation


def test_a_noisy_row_says_so_with_the_cpu_share():
    rec = recommend(two_rows().assign(noisy=[False, True, False], busy_other_cpu_share=[0.1, 0.62, 0.3]))
    assert ("Noisy: a measured while other processes used 62% of the CPU: re-run on a quiet machine before "
            "deciding.") in rec.explanation
    assert rec.noisy == ("a",)
    quiet = recommend(two_rows().assign(noisy=[False, True, False], busy_other_cpu_share=[0.1, 0.05, 0.0]))
    assert "Noisy: a timed with a wide p99 interval or a repeat that disagreed" in quiet.explanation
    assert "Noisy" not in recommend(two_rows()).explanation


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    digits = datasets.load("digits", smoke=True)
    model = zoo.get("digits", "student", smoke=True, data=digits)
    workload = Workload.smoke(threads=1, throughput_batch_sizes=(8,), memory=False, cold_start=False)
    study = Study(model, digits, [Compile(graph_level="basic"), Compile(graph_level="all")], workload=workload,
                  results_dir=tmp_path_factory.mktemp("contenders"), progress=False)
    study.run()
    return study


def test_study_recommend_re_times_the_contenders_unless_told_not_to(study):
    rec = study.recommend(max_quality_drop=0.01, objective="latency")
    assert rec.side_by_side is not None and rec.side_by_side.rounds == contenders.Retiming().rounds
    named = {name for ratio in rec.side_by_side.ratios for name in (ratio.faster, ratio.slower)}
    assert rec.candidate in named and len(named) >= 2
    assert "side by side" in rec.explanation or "Too close to call" in rec.explanation
    separate = study.recommend(max_quality_drop=0.01, objective="latency", retime=False)
    assert separate.side_by_side is None
    if separate.candidate != "baseline" and "baseline" in set(study.results["candidate"]):
        assert "from separate measurements (not re-timed side by side)" in separate.explanation


def test_noisy_rows_carry_a_marker_in_the_tables_and_the_report(tmp_path):
    from optlab.views.report import headline_table, write_report

    rows = two_rows().assign(noisy=[False, True, None], busy_other_cpu_share=[0.1, 0.62, None], quality=0.9)
    table = headline_table(rows).set_index("candidate")
    assert table["noisy"].to_dict() == {"baseline": "", "a": "noisy", "b": ""}
    assert "noisy" not in headline_table(two_rows().assign(quality=0.9)).columns  # nothing to say: no column
    text = write_report(rows, tmp_path / "report.html").read_text()
    assert "Noisy: a measured while other processes used 62% of the CPU" in text
    assert "<th>noisy</th>" in text


def test_a_contender_too_costly_to_rebuild_is_not_re_timed_and_the_words_say_so():
    rows = two_rows().assign(apply_s=[0.0, 300.0, 1.0], recipe_json=None)
    rows = rows[rows["candidate"] != "b"]  # the winner alone with the baseline
    rec = contenders.recommend(object(), rows)
    assert rec.side_by_side is None
    assert "(Not re-timed side by side: a took 300 s to build; the ratios come from separate measurements.)" \
        in rec.explanation


def test_a_baseline_faster_side_by_side_takes_the_lead_or_is_said():
    side = SideBySide(1, 8, (Ratio("a", "b", 1.5, 1.4, 1.6), Ratio("a", "baseline", 0.5, 0.45, 0.55)))
    rec = recommend(two_rows(), side_by_side=side)  # the baseline meets the constraints: it leads
    assert rec.candidate == "baseline" and "ran 2.00x as fast as a" in rec.explanation
    failing = two_rows().assign(p99_ms=[50.0, 1.0, 1.0])  # the baseline breaks the SLA
    rec = recommend(failing, max_p99_ms=10, side_by_side=side)
    assert rec.candidate == "a"
    assert "the baseline ran 2.00x as fast as a side by side (95% CI 1.82-2.22x" in rec.explanation
    assert "faster than the baseline" not in rec.explanation


def test_a_tie_whose_interval_excludes_one_says_why():
    """Within 3% of even counts as a tie; "95% CI 1.03-1.82x" alone read as a clear winner called a tie."""
    from optlab.study.explanation import Ratio

    near = Ratio("a", "b", 1.31, 1.03, 1.82)
    assert near.too_close and near.close_interval() == "1.31x, 95% CI 1.03-1.82x: its end is within 3% of even"
    straddles = Ratio("a", "b", 1.10, 0.95, 1.30)
    assert straddles.too_close and straddles.close_interval() == straddles.interval()
    assert not Ratio("a", "b", 1.5, 1.2, 1.8).too_close
