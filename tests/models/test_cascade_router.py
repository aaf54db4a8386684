"""Routing: which rows go on, and that every output row is the cheap or the expensive model's."""
import numpy as np
import pytest

from optlab.models.cascade import Router, confidence, escalated


def _models(classes: int = 5):
    """Two different linear 'models' over the same rows: distinct outputs on every row."""
    rng = np.random.default_rng(0)
    w_cheap, w_expensive = rng.normal(size=(4, classes)), rng.normal(size=(4, classes))
    calls = {"expensive_rows": 0}

    def cheap(batch):
        return (batch["x"] @ w_cheap).astype(np.float32)

    def expensive(batch):
        calls["expensive_rows"] += batch["x"].shape[0]
        return (batch["x"] @ w_expensive).astype(np.float32)

    return cheap, expensive, calls


BATCH = {"x": np.random.default_rng(1).normal(size=(64, 4)) * 3}


@pytest.mark.parametrize("kind", ["top1", "margin"])
def test_threshold_zero_sends_nothing_on_and_one_sends_everything(kind):
    cheap, expensive, calls = _models()
    assert np.array_equal(Router(cheap, expensive, kind, 0.0)(BATCH), cheap(BATCH))
    assert calls["expensive_rows"] == 0
    assert np.array_equal(Router(cheap, expensive, kind, 1.0)(BATCH), expensive(BATCH))


@pytest.mark.parametrize("kind", ["top1", "margin"])
def test_each_row_is_the_cheap_or_the_expensive_models_as_the_confidence_says(kind):
    cheap, expensive, calls = _models()
    conf = confidence(cheap(BATCH), kind)
    threshold = float(np.median(conf))
    out = Router(cheap, expensive, kind, threshold)(BATCH)
    sent = conf < threshold
    assert 0 < sent.sum() < len(sent)
    assert np.array_equal(out[sent], expensive(BATCH)[sent])
    assert np.array_equal(out[~sent], cheap(BATCH)[~sent])
    assert calls["expensive_rows"] == sent.sum() + len(sent)  # the router asked only for the unsure rows


def test_top1_and_margin_read_the_softmax():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    assert np.allclose(confidence(logits, "top1"), [0.7, 0.4])
    assert np.allclose(confidence(logits, "margin"), [0.5, 0.05])


def test_distance_is_from_the_decision_threshold_of_a_click_probability():
    p = np.array([0.1, 0.2, 0.6, 1 - 1e-9])
    logits = np.log(p / (1 - p))[:, None]  # (N, 1), as click models return it
    conf = confidence(logits, "distance", decision=0.2)
    assert np.allclose(conf, [0.5, 0.0, 0.5, 1.0], atol=1e-6)
    assert np.array_equal(escalated(conf, 0.4), [False, True, False, False])


def test_a_confidence_that_does_not_fit_the_outputs_is_refused():
    with pytest.raises(ValueError, match="one click logit per row"):
        confidence(np.zeros((3, 4)), "distance")
    with pytest.raises(ValueError, match="class scores"):
        confidence(np.zeros(3), "top1")


def test_the_recipe_offers_exactly_the_confidences_the_router_computes():
    from optlab.models import cascade as routing
    from optlab.recipes import cascade as recipe

    assert recipe.CONFIDENCES == routing.CONFIDENCES
