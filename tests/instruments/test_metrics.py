"""Metrics agree with scikit-learn, and their resampled forms with explicit resamples."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from optlab.instruments import metrics

rng = np.random.default_rng(0)
Y = rng.integers(0, 2, 400)
S = np.round(rng.normal(size=400) + Y, 1)  # rounded: ties on purpose
YM = rng.integers(0, 4, 400)
LM = rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[YM]


def test_metrics_match_sklearn():
    assert metrics.score("auc", Y, S, "binary") == pytest.approx(roc_auc_score(Y, S))
    assert metrics.score("f1", Y, S, "binary") == pytest.approx(f1_score(Y, S > 0))
    assert metrics.score("logloss", Y, S, "binary") == pytest.approx(log_loss(Y, 1 / (1 + np.exp(-S))))
    assert metrics.score("f1", YM, LM, "multiclass") == pytest.approx(f1_score(YM, LM.argmax(1), average="macro"))
    assert metrics.score("accuracy", YM, LM, "multiclass") == pytest.approx((LM.argmax(1) == YM).mean())
    probs = np.exp(metrics.log_softmax(LM))
    assert metrics.score("logloss", YM, LM, "multiclass") == pytest.approx(log_loss(YM, probs))


def test_weighted_metrics_equal_explicit_resamples():
    weights = metrics.resample_weights(400, 5, np.random.default_rng(1))
    assert (weights.sum(axis=1) == 400).all()
    aucs, accs = metrics.auc(Y, S, "binary", weights), metrics.accuracy(YM, LM, "multiclass", weights)
    for b in range(5):
        rows = np.repeat(np.arange(400), weights[b].astype(int))
        assert aucs[b] == pytest.approx(roc_auc_score(Y[rows], S[rows]))
        assert accs[b] == pytest.approx((LM[rows].argmax(1) == YM[rows]).mean())


def test_auc_of_a_single_class_is_nan_and_multiclass_auc_refused():
    assert np.isnan(metrics.score("auc", np.ones(5, int), np.arange(5.0), "binary"))
    with pytest.raises(ValueError, match="binary"):
        metrics.score("auc", YM, LM, "multiclass")


def test_calibration_error():
    labels = np.array([1, 0] * 50)
    assert metrics.calibration_error(labels, np.zeros(100), "binary") == pytest.approx(0.0)
    assert metrics.calibration_error(labels, np.full(100, 10.0), "binary") == pytest.approx(0.5, abs=1e-3)


def test_agreement_of_identical_and_flipped_outputs():
    same = metrics.agreement(LM, LM, "multiclass")
    assert same == {"agreement": 1.0, "kl_mean": 0.0, "max_abs_diff": 0.0}
    flipped = metrics.agreement(-S, S, "binary")
    assert flipped["agreement"] < 0.1 and flipped["kl_mean"] > 0 and flipped["max_abs_diff"] == pytest.approx(
        2 * np.abs(S).max())
