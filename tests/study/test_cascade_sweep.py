"""The threshold sweep and a cascade inside a Study, on tiny real models (no timing assertions)."""
import numpy as np
import pytest

from optlab.instruments.latency import Workload
from optlab.recipes import Cascade, Prune
from optlab.study.cascade import CASCADE, CHEAP, EXPENSIVE, score_agreement, spread_rows, threshold_sweep
from optlab.study.study import RunOptions, Study
from optlab.techniques.registry import apply
from optlab.testing import tiny

CHEAP_RECIPE = Prune(0.85, finetune_epochs=0)
RECIPE = Cascade(cheap=CHEAP_RECIPE, max_quality_drop=0.0)  # the threshold chosen on validation


@pytest.fixture(scope="module")
def digits():
    data = tiny.digits_dataset()
    return data, tiny.trained(tiny.digits_model(width=64), data, epochs=3)


def test_the_sweep_has_a_row_per_threshold_and_both_models_alone(digits, tmp_path):
    data, model = digits
    candidate = apply(RECIPE, model, data, workdir=tmp_path)
    sweep = threshold_sweep(candidate, data, timed_rows=40, rounds=2, turn_s=0.005, n_boot=50)
    table = sweep.table

    def only(mask):
        assert mask.sum() == 1
        return table[mask].iloc[0]

    cheap, expensive = only(table["model"] == CHEAP), only(table["model"] == EXPENSIVE)
    nothing = only((table["model"] == CASCADE) & (table["threshold"] == 0.0))
    everything = only((table["model"] == CASCADE) & (table["threshold"] == 1.0))
    assert nothing["escalated_share"] == 0 and nothing["quality"] == cheap["quality"]
    assert everything["escalated_share"] == 1 and everything["quality"] == expensive["quality"]
    assert expensive["quality_drop"] == 0 and cheap["quality_drop"] > 0
    cascades = sweep.table[sweep.table["model"] == CASCADE]
    assert cascades["escalated_share"].is_monotonic_increasing and cascades["threshold"].is_monotonic_increasing
    assert sweep.table["chosen"].sum() == 1 and sweep.chosen_threshold == candidate.meta["threshold"]
    for row in sweep.table.to_dict("records"):  # the timed requests sent on the test split's share
        assert abs(row["timed_escalated_share"] - row["escalated_share"]) <= 1 / 40 + 0.02
        assert row["quality_ci_low"] <= row["quality"] <= row["quality_ci_high"]
        assert row["cost_per_1m_usd"] > 0 and row["mean_ms"] > 0
    assert set(sweep.samples["model"]) == {CHEAP, EXPENSIVE, CASCADE}
    with pytest.raises(ValueError, match="thresholds"):
        threshold_sweep(candidate, data, thresholds=[1.5])
    with pytest.raises(ValueError, match="cascade candidate"):
        threshold_sweep(candidate.parts[0], data)


def test_timed_rows_are_distinct_and_hold_the_escalated_share_in_every_stretch():
    mask = np.zeros(1000, dtype=bool)
    mask[np.random.default_rng(0).choice(1000, 200, replace=False)] = True
    rows = spread_rows(mask, 100)
    assert len(set(rows)) == 100 and mask[rows].sum() == 20
    assert all(mask[rows[start:start + 10]].sum() == 2 for start in range(0, 100, 10))


def test_a_cascade_in_a_study_has_its_escalated_share_and_obeys_the_size_budget(digits, tmp_path):
    data, model = digits
    study = Study(model, data, [RECIPE], results_dir=tmp_path,
                  workload=Workload.smoke(cold_start=False, throughput_batch_sizes=(1,)),
                  options=RunOptions(progress=False))
    results = study.run().set_index("candidate")
    row = results.loc[RECIPE.name]
    assert row["status"] == "ok" and 0 < row["escalated_share"] < 1 and 0 < row["cascade_threshold"] < 1
    assert row["size_mb"] > results.loc["baseline", "size_mb"]  # both models are on disk
    budget = (row["size_mb"] + results.loc["baseline", "size_mb"]) / 2
    rec = study.recommend(max_size_mb=budget, retime=False)
    assert rec.candidate == "baseline"
    with pytest.raises(ValueError, match="max_memory_mb"):
        study.recommend(max_memory_mb=-5)


def test_score_agreement_reads_rank_agreement_and_the_scale_between_two_click_models():
    cheap = np.random.default_rng(0).normal(-3.0, 1.0, 500)
    same_ranking = score_agreement(cheap, 2.0 * cheap - 0.5)  # one ranking, another scale
    assert same_ranking["spearman"] == pytest.approx(1.0)
    assert same_ranking["scale_slope"] == pytest.approx(2.0) and same_ranking["scale_intercept"] == pytest.approx(-0.5)
    noisy = score_agreement(cheap, cheap + np.random.default_rng(1).normal(0, 1.0, 500))
    assert 0.5 < noisy["spearman"] < 0.9 and noisy["scale_slope"] == pytest.approx(1.0, abs=0.15)
    assert score_agreement(cheap, -cheap)["spearman"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="one click logit per row"):
        score_agreement(cheap, cheap[:10])
