"""Analysts' inputs in every accepted form, and the bad ones named."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optlab.data.user_inputs import as_batch, load_labels


def test_npz_dict_array_frame_and_callable_give_the_same_batch(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savez(tmp_path / "in.npz", features=x)
    np.save(tmp_path / "in.npy", x)
    forms = [tmp_path / "in.npz", str(tmp_path / "in.npy"), {"features": x}, x, pd.DataFrame(x),
             lambda: ({"features": x[i:i + 2]} for i in (0, 2))]
    for form in forms:
        batch = as_batch(form, ["features"])
        np.testing.assert_array_equal(batch["features"], x)


def test_frame_with_one_column_per_input():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.1, 0.2]})
    batch = as_batch(frame, ["a", "b"])
    assert batch["a"].tolist() == [1, 2, 3] and batch["b"].dtype == np.float64


@pytest.mark.parametrize("source, message", [
    ({"features": np.zeros((0, 3))}, "has no rows"),
    ({}, "the inputs are empty"),
    (lambda: iter(()), "were empty"),
    (np.zeros((2, 3)), "the model has 2 inputs"),
])
def test_empty_or_ambiguous_inputs_are_named(source, message):
    names = ["features", "other"] if isinstance(source, np.ndarray) else ["features"]
    with pytest.raises(ValueError, match=message):
        as_batch(source, names)


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="inputs file not found"):
        as_batch(tmp_path / "nope.npz")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="use .npz"):
        as_batch(tmp_path / "x.csv")


def test_labels_of_the_wrong_length_are_named(tmp_path):
    np.save(tmp_path / "y.npy", np.zeros(5, dtype=np.int64))
    assert load_labels(tmp_path / "y.npy", 5).shape == (5,)
    with pytest.raises(ValueError, match="labels have shape \\[5\\] but the inputs have 4 rows"):
        load_labels(tmp_path / "y.npy", 4)


def test_a_scalar_is_allowed_beside_inputs_with_rows_but_not_alone():
    batch = as_batch({"x": np.zeros((3, 2)), "sr": np.array(16000)})
    assert batch["sr"].shape == ()
    with pytest.raises(ValueError, match="every input is a scalar"):
        as_batch({"sr": np.array(16000)})


def test_nan_and_inf_are_named_by_input_and_count():
    from optlab.data.user_inputs import check_finite

    x = np.zeros((4, 3))
    x[0, 0], x[1, 2], x[2, 1] = np.nan, np.nan, np.inf
    with pytest.raises(ValueError, match=r"input 'x' has 2 NaN and 1 infinite values \(of 12\); clean or impute"):
        check_finite({"x": x, "ids": np.ones((4, 2), dtype=np.int64), "ok": np.ones(4)})
    check_finite({"x": np.ones((2, 2))})  # nothing to say
