"""A cascade candidate from tiny real models: the threshold is chosen on the validation split alone,
its outputs are routed row by row, and its results row carries the escalated share."""
import dataclasses

import numpy as np
import pytest

from optlab.instruments import metrics
from optlab.instruments.quality import predict_split
from optlab.models.cascade import confidence
from optlab.recipes import Cascade, Prune
from optlab.techniques.cascade import choose_threshold
from optlab.techniques.registry import apply
from optlab.testing import tiny

CHEAP = Prune(0.85, finetune_epochs=0)  # a damaged copy of the model: fast, and worse on some rows


@pytest.fixture(scope="module")
def digits():
    data = tiny.digits_dataset()
    return data, tiny.trained(tiny.digits_model(width=64), data, epochs=3)


def test_the_threshold_is_chosen_on_validation_never_on_test(digits, tmp_path):
    data, model = digits
    recipe = Cascade(cheap=CHEAP, max_quality_drop=0.0)
    first = apply(recipe, model, data, workdir=tmp_path / "a")
    assert first.meta["threshold_split"] == "validation"
    rng = np.random.default_rng(0)
    shuffled_test = dataclasses.replace(data, test=dataclasses.replace(data.test, labels=rng.permutation(
        data.test.labels)))
    again = apply(recipe, model, shuffled_test, workdir=tmp_path / "b")
    assert again.meta["threshold"] == first.meta["threshold"]
    wrong_validation = dataclasses.replace(data, validation=dataclasses.replace(
        data.validation, labels=(data.validation.labels + 1) % 10))
    moved = apply(recipe, model, wrong_validation, workdir=tmp_path / "c")
    assert moved.meta["threshold"] != first.meta["threshold"]  # it does read the validation labels


def test_the_chosen_threshold_meets_the_target_on_validation_with_the_fewest_rows_sent(digits, tmp_path):
    data, model = digits
    candidate = apply(Cascade(cheap=CHEAP, max_quality_drop=0.0), model, data, workdir=tmp_path)
    cheap, expensive = candidate.parts
    split = data.validation
    cheap_out, expensive_out = predict_split(cheap, split), predict_split(expensive, split)
    choice = choose_threshold(cheap_out, expensive_out, split.labels, "multiclass", "top1", max_quality_drop=0.0)
    assert choice.threshold == candidate.meta["threshold"] and choice.met
    assert 0 < choice.escalated_share < 1  # the damaged model needs help on some rows, not on all
    assert choice.quality >= choice.expensive_quality > choice.cheap_quality
    routed = candidate.predict(split.inputs)
    cheap_out, expensive_out = cheap.predict(split.inputs), expensive.predict(split.inputs)  # the same one batch
    assert metrics.score("accuracy", split.labels, routed, "multiclass") == pytest.approx(choice.quality, abs=0.01)
    sent = confidence(cheap_out, "top1") < choice.threshold
    assert sent.mean() == pytest.approx(choice.escalated_share, abs=0.01)
    on_their_own = expensive.predict({name: value[sent] for name, value in split.inputs.items()})
    assert np.array_equal(routed[sent], on_their_own) and np.array_equal(routed[~sent], cheap_out[~sent])


def test_the_results_row_carries_the_test_splits_escalated_share(digits, tmp_path):
    data, model = digits
    candidate = apply(Cascade(cheap=CHEAP, threshold=1.0), model, data, workdir=tmp_path)
    assert candidate.split_figures(data, "test") == {"escalated_share": 1.0, "cascade_threshold": 1.0}
    candidate = apply(Cascade(cheap=CHEAP, threshold=0.0), model, data, workdir=tmp_path / "none")
    assert candidate.split_figures(data, "test")["escalated_share"] == 0.0
    assert candidate.size_bytes == sum(part.size_bytes for part in candidate.parts)


def test_a_confidence_that_does_not_fit_the_task_is_refused_before_any_model_is_built(digits, tmp_path):
    data, model = digits
    with pytest.raises(ValueError, match="use confidence='top1' or 'margin'"):
        apply(Cascade(cheap=CHEAP, confidence="distance"), model, data, workdir=tmp_path)
    assert not (tmp_path / "cheap").exists()
