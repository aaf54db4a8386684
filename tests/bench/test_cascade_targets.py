"""The cascade bench's verdict: judged from the sweep's table, never hard-coded."""
import pandas as pd

from optlab.bench.cascade import judge


def _table(quality: float, cascade_ms: float, share: float = 0.15):
    rows = [dict(model="expensive alone", threshold=None, escalated_share=1.0, quality=0.978, quality_ci_low=0.972,
                 quality_ci_high=0.983, mean_ms=0.2, cost_per_1m_usd=0.011, chosen=False),
            dict(model="cascade", threshold=0.93, escalated_share=share, quality=quality,
                 quality_ci_low=quality - 0.006,
                 quality_ci_high=quality + 0.006, mean_ms=cascade_ms, cost_per_1m_usd=0.011 * cascade_ms / 0.2,
                 chosen=True)]
    return pd.DataFrame(rows).assign(dataset="digits", metric="accuracy")


def test_met_needs_quality_within_the_interval_and_2x_on_latency_and_cost():
    met = judge(_table(0.975, 0.08), "digits")
    assert met["met"] is True and met["sentence"].startswith("[digits] MET") and "2.50x lower" in met["sentence"]
    below = judge(_table(0.970, 0.08), "digits")
    assert below["met"] is False and "below the expensive model's 95% interval" in below["sentence"]
    slow = judge(_table(0.975, 0.15), "digits")
    assert slow["met"] is False and "1.33x lower" in slow["sentence"]
    slower = judge(_table(0.975, 0.3), "digits")
    assert "1.50x higher" in slower["sentence"] and "nan" not in slower["sentence"]


def test_a_sweep_without_a_chosen_threshold_is_not_judged():
    table = _table(0.975, 0.08).assign(chosen=False)
    row = judge(table, "digits")
    assert row["met"] is None and row["figure"] is None and "n/a" in row["sentence"]


def test_the_click_cascade_takes_its_decision_and_student_budget_from_training_rows_only():
    """bids' cascade: the decision threshold is the training split's click rate and the student trains for
    the epochs chosen on validation (STUDENT_EPOCHS); neither moves when the test split's labels do."""
    import dataclasses

    from optlab.bench.cascade import STUDENT_EPOCHS, recipe_for
    from optlab.testing import tiny

    data = tiny.bids_dataset(rows=3000)
    recipe = recipe_for(data, "baseline")
    assert recipe.confidence == "distance" and recipe.max_quality_drop == 0.0
    assert recipe.decision == round(float(data.train.labels.mean()), 3)
    assert recipe.cheap.steps[0].epochs == STUDENT_EPOCHS["bids"] and recipe.expensive is None
    flipped = dataclasses.replace(data, test=dataclasses.replace(data.test, labels=1 - data.test.labels))
    assert recipe_for(flipped, "baseline") == recipe
    assert recipe_for(tiny.digits_dataset(), "baseline").cheap.steps[0].epochs is None  # the zoo's budget
