"""evaluate() and gate() on tiny inline datasets and real torch models."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from optlab.data.datasets import Dataset, Split
from optlab.instruments.quality import EvaluationError, Quality, Reference, evaluate, gate, predict_split, reference
from optlab.models.candidate import Candidate


def make_dataset(task="multiclass", n=600, seed=0, text=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    if task == "multiclass":
        labels = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0.8).astype(int)
        num_classes = 4
    else:
        labels = (rng.random(n) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype(int)
        num_classes = 2
    inputs = {"x": x}
    if text:
        lengths = rng.integers(1, 9, n)
        inputs["attention_mask"] = (np.arange(8)[None, :] < lengths[:, None]).astype(np.int64)
    split = Split(inputs, labels)
    slices = {"region": np.where(np.arange(n) % 3 == 0, "north", "south")}
    return Dataset("tiny", task, num_classes, split, split, split, split, [], slices, {}, "fp")


def linear_candidate(task, name="base", bias_shift=0.0, seed=0):
    torch.manual_seed(seed)
    out = 4 if task == "multiclass" else 1
    model = torch.nn.Linear(4, out)
    with torch.no_grad():
        model.weight.zero_()
        if task == "multiclass":
            model.weight[1, 0] = model.weight[3, 1] = 3.0
            model.weight[0, 0] = -3.0
            model.weight[2, 1] = -1.0
        else:
            model.weight[0, 0] = 2.0
        model.bias.fill_(bias_shift)

    def predict(batch):
        with torch.inference_mode():
            y = model(torch.from_numpy(batch["x"])).numpy()
            return y[:, 0] if task == "binary" else y
    return Candidate(name, predict, model=model)


@pytest.fixture(scope="module")
def digits_like():
    return make_dataset()


@pytest.fixture(scope="module")
def clicks():
    return make_dataset("binary")


def test_predict_split_matches_one_big_batch(digits_like):
    candidate = linear_candidate("multiclass")
    out = predict_split(candidate, digits_like.test, batch_size=64)
    assert out.shape == (600, 4)
    np.testing.assert_allclose(out, candidate.predict(digits_like.test.inputs), rtol=1e-6)


def test_candidate_against_itself(digits_like):
    base = linear_candidate("multiclass")
    q = evaluate(base, digits_like, base, n_boot=200)
    assert q.metric == "accuracy" and q.quality == q.accuracy == q.baseline_quality > 0.6
    assert q.quality_drop == 0 and q.quality_drop_ci_low == q.quality_drop_ci_high == 0
    assert (q.agreement, q.kl_mean, q.max_abs_diff) == (1.0, 0.0, 0.0) and q.drop_significant is False


def test_reference_and_arrays_give_the_same_quality(digits_like):
    base, worse = linear_candidate("multiclass"), linear_candidate("multiclass", "worse", bias_shift=0.0, seed=1)
    noisy = base.predict(digits_like.test.inputs) + np.random.default_rng(0).normal(0, 2, (600, 4))
    ref = reference(base, digits_like)
    a = evaluate(noisy, digits_like, ref, n_boot=200)
    b = evaluate(noisy, digits_like, base, n_boot=200)
    c = evaluate(noisy, digits_like, ref.logits, n_boot=200)
    assert a.to_row() == dict(b.to_row()) | {"baseline": "base"} and c.quality_drop == a.quality_drop
    assert a.quality_drop > 0 and a.quality_drop_ci_low <= a.quality_drop <= a.quality_drop_ci_high
    assert 0 < a.agreement < 1 and a.kl_mean > 0 and a.candidate == "candidate" and worse.name == "worse"


def test_a_real_drop_is_significant_and_a_tiny_one_is_not(digits_like):
    base = linear_candidate("multiclass")
    logits = base.predict(digits_like.test.inputs)
    labels = digits_like.test.labels
    broken = logits.copy()
    wrong = np.flatnonzero(logits.argmax(1) == labels)[:120]
    broken[wrong, labels[wrong]] -= 100  # 120 of 600 rows become wrong: a 20-point drop
    assert evaluate(broken, digits_like, base, n_boot=300).drop_significant
    tiny = logits.copy()
    tiny[wrong[:1], labels[wrong[:1]]] -= 100  # one row: noise
    q = evaluate(tiny, digits_like, base, n_boot=300)
    assert q.quality_drop == pytest.approx(1 / 600) and not q.drop_significant


def test_worst_slice_is_found(digits_like):
    base = linear_candidate("multiclass")
    logits = base.predict(digits_like.test.inputs)
    north = np.flatnonzero(digits_like.slices["region"] == "north")
    hurt = logits.copy()
    hurt[north] = -hurt[north]
    q = evaluate(hurt, digits_like, base, n_boot=100)
    assert q.worst_slice in ("region=north",) or q.worst_slice.startswith("class=")
    region = {s["group"]: s for s in q.slices if s["slice"] == "region"}
    assert region["north"]["drop"] > 0.3 and region["south"]["drop"] == 0
    assert q.worst_slice_drop == max(s["drop"] for s in q.slices)
    assert {s["slice"] for s in q.slices} == {"region", "class"}


def test_text_gets_a_length_slice():
    data = make_dataset(text=True)
    q = evaluate(linear_candidate("multiclass"), data, n_boot=50)
    groups = [s["group"] for s in q.slices if s["slice"] == "length"]
    assert len(groups) >= 3 and all("-" in g for g in groups) and q.baseline is None and q.quality_drop is None


def test_binary_click_model_auc_and_calibration(clicks):
    base, shifted = linear_candidate("binary"), linear_candidate("binary", "shifted", bias_shift=1.5)
    q = evaluate(shifted, clicks, base, n_boot=200)
    scores = base.predict(clicks.test.inputs)
    assert q.metric == "auc" and q.baseline_quality == pytest.approx(roc_auc_score(clicks.test.labels, scores))
    assert q.quality_drop == pytest.approx(0, abs=1e-12)  # a bias shift keeps the ranking
    assert q.observed_rate == pytest.approx(clicks.test.labels.mean()) and q.mean_predicted > q.observed_rate + 0.1
    assert q.ece > evaluate(base, clicks, n_boot=10).ece and q.agreement < 1 and q.logloss > 0
    assert {"auc", "logloss", "ece", "mean_predicted", "observed_rate", "f1"} <= set(q.to_row())


def test_gate_passes_and_fails_with_reasons(digits_like):
    base = linear_candidate("multiclass")
    same = evaluate(base, digits_like, base, n_boot=50)
    verdict = gate(same, max_drop=0.01, min_agreement=0.99, max_slice_drop=0.05)
    assert verdict and verdict.passed and len(verdict.reasons) == 3 and not verdict.failures
    logits = base.predict(digits_like.test.inputs)
    logits[:60] = -logits[:60]
    q = evaluate(logits, digits_like, base, n_boot=50)
    verdict = gate(q, max_drop=0.01, min_agreement=0.99)
    assert not verdict and len(verdict.failures) == 2
    assert "accuracy drop" in verdict.failures[0] and "agreement" in verdict.failures[1]
    alone = gate(evaluate(base, digits_like, n_boot=10))
    assert not alone and "no baseline" in alone.reasons[0]
    assert gate(same, max_drop=None)


def test_confident_gate_uses_the_interval(digits_like):
    base = linear_candidate("multiclass")
    logits = base.predict(digits_like.test.inputs)
    right = np.flatnonzero(logits.argmax(1) == digits_like.test.labels)[:3]
    logits[right] = -logits[right]
    q = evaluate(logits, digits_like, base, n_boot=300)
    assert gate(q, max_drop=0.01) and not gate(q, max_drop=0.01, confident=True)


def test_quality_json_round_trip(clicks):
    q = evaluate(linear_candidate("binary", "c", 0.2), clicks, linear_candidate("binary"), n_boot=50)
    back = Quality.from_json(q.to_json())
    assert back.to_row() == q.to_row() and back.slices == q.slices and "slices" not in q.to_row()


def test_bad_outputs_are_clear_errors(digits_like):
    base = linear_candidate("multiclass")
    with pytest.raises(EvaluationError, match=r"shape \(600, 3\), expected \(600, 4\)"):
        evaluate(np.zeros((600, 3)), digits_like, base)
    with pytest.raises(EvaluationError, match="nanny.*NaN"):
        evaluate(Candidate("nanny", lambda b: np.full((len(b["x"]), 4), np.nan)), digits_like)
    with pytest.raises(EvaluationError, match="boom: predict raised ValueError"):
        evaluate(Candidate("boom", lambda b: (_ for _ in ()).throw(ValueError("x"))), digits_like)
    with pytest.raises(EvaluationError, match="short: predict returned shape"):
        evaluate(Candidate("short", lambda b: np.zeros((1, 4))), digits_like)
    with pytest.raises(EvaluationError, match="validation"):
        evaluate(base, digits_like, Reference("b", np.zeros((600, 4)), split="validation"))
    with pytest.raises(ValueError, match="metric='auc'"):
        evaluate(base, digits_like, metric="auc")


def test_delong_interval_agrees_with_the_paired_bootstrap():
    from optlab.instruments.quality import delong_drop_ci, paired_drop_ci

    rng = np.random.default_rng(0)
    n = 6000
    labels = (rng.random(n) < 0.1).astype(np.int64)
    base = labels * 0.8 + rng.normal(size=n)
    cand = base + rng.normal(scale=0.3, size=n)
    boot = paired_drop_ci("auc", labels, cand, base, "binary", n_boot=2000, seed=1)
    delong = delong_drop_ci(labels, cand, base)
    width = boot[1] - boot[0]
    assert abs(delong[0] - boot[0]) < 0.15 * width and abs(delong[1] - boot[1]) < 0.15 * width
