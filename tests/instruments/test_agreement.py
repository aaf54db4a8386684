"""Agreement without labels: top-1 for scores, cosine otherwise, per output."""
from __future__ import annotations

import numpy as np
import pytest

from optlab.instruments.agreement import bootstrap_mean_ci, compare, per_row_agreement


def test_scores_use_top1_and_values_use_cosine():
    base = np.array([[2.0, 1.0], [0.0, 3.0]])
    assert per_row_agreement(base[:, ::-1], base, "scores").tolist() == [0.0, 0.0]
    assert per_row_agreement(base * 2, base, "values") == pytest.approx([1.0, 1.0])
    assert per_row_agreement(-base, base, "values") == pytest.approx([-1.0, -1.0])


def test_compare_splits_flattened_outputs_by_layout():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 5))
    cand = base.copy()
    cand[:10, :4] = cand[:10, :4][:, ::-1]  # scrambles some class scores, leaves the value column alone
    layout = [{"name": "scores", "width": 4, "kind": "scores"}, {"name": "value", "width": 1, "kind": "values"}]
    per_row, summary = compare(cand, base, layout)
    assert [s["group"] for s in summary] == ["scores", "value"]
    assert summary[1]["quality"] == pytest.approx(1.0) and summary[1]["max_abs_diff"] == 0.0
    assert summary[0]["quality"] < 1.0 and per_row.shape == (50,)


def test_shape_change_is_an_error():
    with pytest.raises(ValueError, match="changed the model's outputs"):
        compare(np.zeros((3, 2)), np.zeros((3, 3)), [{"name": "o", "width": 3, "kind": "scores"}])


def test_bootstrap_interval_brackets_the_mean():
    values = np.r_[np.ones(90), np.zeros(10)]
    low, high = bootstrap_mean_ci(values, n_boot=500)
    assert low < 0.9 < high and high - low < 0.2
