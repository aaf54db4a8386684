"""Agreement without labels: top-1 for scores, cosine otherwise, per output."""
from __future__ import annotations

import numpy as np
import pytest

from optlab.instruments.agreement import bootstrap_mean_ci, compare, per_row_agreement


def test_scores_use_top1_and_values_use_cosine_and_relative_error():
    base = np.array([[2.0, 1.0], [0.0, 3.0]])
    assert per_row_agreement(base[:, ::-1], base, "scores").tolist() == [0.0, 0.0]
    assert per_row_agreement(base * 1.01, base, "values") == pytest.approx([0.99, 0.99])
    assert per_row_agreement(base * 2, base, "values") == pytest.approx([0.0, 0.0])  # same direction, twice as long
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


def test_a_sequence_is_compared_per_position_not_flattened():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 8, 5))
    cand = base + rng.normal(0, 0.01, base.shape)  # tiny noise: every position keeps its argmax here
    cand[0, 3] = cand[0, 3][::-1]  # one position of one row flips
    layout = [{"name": "scores", "width": 40, "shape": [8, 5], "kind": "sequence"}]
    per_row, (summary,) = compare(cand.reshape(20, -1), base.reshape(20, -1), layout)
    flips = int((cand[0, 3].argmax() != base[0, 3].argmax()))
    assert summary["measure"] == "per-position top-1 agreement"
    assert summary["quality"] == pytest.approx(1 - flips / 160)
    assert summary["identical_rate"] == pytest.approx(1 - flips / 20)
    # the same outputs scored as one flattened vector of class scores: a different question
    flat = per_row_agreement(cand.reshape(20, -1), base.reshape(20, -1), "classes").mean()
    assert summary["kind"] == "sequence" and 0.0 <= flat <= 1.0


def test_a_dense_map_uses_iou_of_thresholded_maps_and_relative_error():
    base = np.zeros((2, 1, 4, 4))
    base[:, 0, :2, :2] = 0.9  # 4 "on" pixels per map (probabilities)
    cand = base.copy()
    cand[0, 0, 0, 2] = 0.8  # one extra pixel in row 0
    per_row, (summary,) = compare(cand.reshape(2, -1), base.reshape(2, -1),
                                  [{"name": "prob", "width": 16, "shape": [1, 4, 4], "kind": "dense"}])
    assert per_row.tolist() == pytest.approx([4 / 5, 1.0])
    assert summary["threshold"] == 0.5 and summary["pixel_agreement"] == pytest.approx(31 / 32)
    assert summary["relative_error"] == pytest.approx((0.8 / np.linalg.norm(base[0])) / 2)


def test_values_report_cosine_and_relative_error():
    base = np.array([[3.0, 4.0], [1.0, 0.0]])
    per_row, (summary,) = compare(base * 1.1, base, [{"name": "v", "width": 2, "kind": "values"}])
    assert per_row == pytest.approx([0.9, 0.9]) and summary["relative_error"] == pytest.approx(0.1)
    assert summary["cosine"] == pytest.approx(1.0)


def test_an_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown output kind 'boxes'"):
        per_row_agreement(np.zeros((2, 2)), np.zeros((2, 2)), "boxes")


def _dense_layout(n: int = 16):
    return [{"name": "prob", "width": n, "shape": [1, 4, 4], "kind": "dense"}]


def test_two_empty_maps_are_not_perfect_agreement_when_the_candidate_collapsed():
    """An all-zero map against an empty baseline map: the IoU of two empty masks is undefined, so
    those rows fall back to cosine, and the relative error (1.0) gates them too."""
    base = np.random.default_rng(0).uniform(0.01, 0.3, (6, 16))  # probabilities, nothing above 0.5
    per_row, (summary,) = compare(np.zeros_like(base), base, _dense_layout())
    assert per_row.tolist() == [0.0] * 6
    assert summary["empty_map_rows"] == 6 and summary["rows_over_relative_error"] == 6
    assert summary["relative_error"] == pytest.approx(1.0)
    close, (kept,) = compare(base * 1.01, base, _dense_layout())  # a faithful candidate on the same empty maps
    assert close == pytest.approx([1.0] * 6) and kept["rows_over_relative_error"] == 0


def test_every_kind_counts_a_row_that_moved_past_the_gate_as_disagreeing():
    base = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    shifted = base + 10.0  # the same top-1 class per row, but the scores are no longer the model's
    assert per_row_agreement(shifted, base, "classes").tolist() == [1.0, 1.0]
    per_row, (summary,) = compare(shifted, base, [{"name": "scores", "width": 3, "kind": "classes"}])
    assert per_row.tolist() == [0.0, 0.0] and summary["rows_over_relative_error"] == 2
    sequence = np.stack([base, base])  # (2, 2, 3): two positions per row
    per_row, _ = compare((sequence + 10.0).reshape(2, -1), sequence.reshape(2, -1),
                         [{"name": "seq", "width": 6, "shape": [2, 3], "kind": "sequence"}])
    assert per_row.tolist() == [0.0, 0.0]


def test_rows_carry_both_sequence_figures():
    from optlab.instruments.agreement import row_figures

    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 4, 3))
    cand = base.copy()
    cand[0, 0] = cand[0, 0][::-1] if cand[0, 0].argmax() != 1 else cand[0, 0][[1, 0, 2]]  # one position flips
    _, summaries = compare(cand.reshape(10, -1), base.reshape(10, -1),
                           [{"name": "seq", "width": 12, "shape": [4, 3], "kind": "sequence"}])
    figures = row_figures(summaries)
    assert figures["sequence_agreement"] == pytest.approx(1 - 1 / 40)
    assert figures["identical_rate"] == pytest.approx(0.9)
    assert row_figures([{**summaries[0], "kind": "classes"}]) == {"sequence_agreement": None, "identical_rate": None}
