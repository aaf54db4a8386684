"""Distillation on the zoo's real teacher/student pairs over small slices of the smoke data:
the student moves toward the teacher (KL falls), the from-scratch control runs on the same
budget, teacher logits are computed once, DistilBERT-style layer initialisation, the binary
soft loss, a Distill -> Prune -> Quantize chain end to end, and clear errors for bad input."""
import dataclasses

import numpy as np
import pytest
import torch

from optlab.models import zoo
from optlab.models.training import TrainingDiverged
from optlab.recipes.recipe import Chain, Distill, Prune, Quantize
from optlab.techniques import distill
from optlab.techniques.registry import apply


def small(data, train=512, test=256):
    return dataclasses.replace(data, train=data.train.take(slice(0, train)), validation=data.validation.take(
        slice(0, test)), test=data.test.take(slice(0, test)), calibration=data.calibration.take(slice(0, 64)),
        slices={k: v[:test] for k, v in data.slices.items()})


@pytest.fixture(scope="module")
def digits(digits_data, digits_model):
    return digits_model, small(digits_data, train=1024)


def _logits(model, split):
    from optlab.models.runtimes import torch_predict_fn

    predict = torch_predict_fn(model)
    return np.concatenate([predict(b) for b in split.batches(256)])


def _kl(teacher_logits, student_logits):
    t = torch.log_softmax(torch.from_numpy(teacher_logits), -1)
    s = torch.log_softmax(torch.from_numpy(student_logits), -1)
    return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean"))


def test_distilled_student_moves_toward_teacher_and_control_runs(digits, tmp_path):
    teacher, data = digits
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    untrained = zoo.build("digits", "student", data, seed=0)
    kd = apply(Distill(epochs=4, temperature=4.0, alpha=0.9), teacher, data, workdir=tmp_path)
    control = apply(Distill(epochs=4, from_scratch=True), teacher, data, workdir=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), "teacher mutated"
    t = _logits(teacher, data.test)
    assert _kl(t, _logits(kd.model, data.test)) < 0.9 * _kl(t, _logits(untrained, data.test))  # KL decreases
    assert kd.family == control.family == "distillation"
    assert kd.meta["student_params"] < kd.meta["teacher_params"]
    assert control.meta["from_scratch"] and not kd.meta["from_scratch"]
    assert kd.meta["epochs_run"] == control.meta["epochs_run"] == 4
    for key in ("epochs", "lr", "batch_size", "warmup_fraction", "student_params"):
        assert kd.meta[key] == control.meta[key], f"the control must get the same {key}"
    batch = next(data.test.batches(8))
    from optlab.models.runtimes import load_torch

    np.testing.assert_allclose(load_torch(kd.artifact_path)(batch), kd.predict(batch), rtol=1e-5, atol=1e-6)


def test_teacher_logits_computed_once_per_teacher(digits, tmp_path):
    teacher, data = digits
    distill._TEACHER_LOGITS.clear()
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        apply(Distill(epochs=1), teacher, data, workdir=tmp_path)
        first = len(calls)
        apply(Distill(epochs=1, temperature=2.0), teacher, data, workdir=tmp_path)
    finally:
        hook.remove()
    assert first == -(-len(data.train) // 256) and len(calls) == first  # one pass over train, then cached


def test_bert_student_starts_from_alternate_teacher_layers(intents_data, digits_data):
    data = small(intents_data, train=64, test=32)
    teacher = zoo.build("intents", "teacher", data, seed=1)
    student = zoo.build("intents", "student", data, seed=2)
    copied = distill.init_from_teacher(student, teacher)
    assert copied == len(student.state_dict())
    t_layers, s_layers = teacher.bert.bert.encoder.layer, student.bert.bert.encoder.layer
    for i, j in ((0, 0), (1, 2)):
        assert torch.equal(s_layers[i].output.dense.weight, t_layers[j].output.dense.weight)
    assert torch.equal(student.bert.classifier.weight, teacher.bert.classifier.weight)
    # a CNN student of a different width starts fresh
    assert distill.init_from_teacher(zoo.build("digits", "student", digits_data),
                                     zoo.build("digits", "teacher", digits_data)) == 0


def test_binary_soft_loss_is_minimal_at_the_teacher():
    teacher = torch.tensor([-3.0, -0.5, 0.0, 2.0])
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    student = teacher.clone().requires_grad_(True)
    loss = distill.kd_loss(student, teacher, labels, task="binary", temperature=4.0, alpha=1.0)
    loss.backward()
    assert torch.allclose(student.grad, torch.zeros(4), atol=1e-6)
    worse = distill.kd_loss(teacher + 1.0, teacher, labels, task="binary", temperature=4.0, alpha=1.0)
    assert worse > loss


def test_distill_bids_binary_end_to_end(bids_data, tmp_path):
    data = small(bids_data, train=1024)
    teacher = zoo.build("bids", "teacher", data)
    candidate = apply(Distill(epochs=1), teacher, data, workdir=tmp_path)
    out = candidate.predict(next(data.test.batches(16)))
    assert out.shape == (16,) and np.isfinite(out).all()


def test_chain_distill_prune_quantize(digits, tmp_path):
    teacher, data = digits
    chain = Chain(Distill(epochs=1), Prune(0.3, structured=True, finetune_epochs=1), Quantize("dynamic-int8"))
    candidate = apply(chain, teacher, data, workdir=tmp_path)
    assert candidate.name == chain.name and candidate.family == "chain" and candidate.recipe == chain
    out = candidate.predict(next(data.test.batches(16)))
    assert out.shape == (16, data.num_classes) and np.isfinite(out).all()
    assert candidate.size_bytes and candidate.size_bytes > 0


def test_chain_prune_then_onnxruntime_quantize(digits, tmp_path):
    teacher, data = digits
    chain = Chain(Prune(0.5, structured=True, finetune_epochs=0), Quantize("dynamic-int8", runtime="onnxruntime"))
    candidate = apply(chain, teacher, data, workdir=tmp_path)
    assert candidate.runtime == "onnxruntime" and candidate.name == chain.name
    batch = next(data.test.batches(16))
    pruned = apply(chain.steps[0], teacher, data, workdir=tmp_path)
    assert np.mean(candidate.predict(batch).argmax(1) == pruned.predict(batch).argmax(1)) >= 0.8


def test_student_larger_than_teacher_is_rejected(digits, tmp_path):
    _, data = digits
    small_teacher = zoo.build("digits", "student", data)
    with pytest.raises(ValueError, match="larger than its teacher"):
        apply(Distill(student="teacher"), small_teacher, data, workdir=tmp_path)


def test_unknown_student_size_is_rejected(digits, tmp_path):
    teacher, data = digits
    with pytest.raises(ValueError, match="choose one of"):
        apply(Distill(student="huge"), teacher, data, workdir=tmp_path)


def test_diverging_distillation_raises(digits, tmp_path):
    teacher, data = digits
    with pytest.raises(TrainingDiverged):
        apply(Distill(epochs=3, lr=1e6), teacher, data, workdir=tmp_path)


def test_threads_are_restored_after_distilling(digits, tmp_path):
    teacher, data = digits
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        apply(Distill(epochs=1), teacher, data, threads=1, workdir=tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_byom_distillation_without_training_rows_is_refused_before_work(tmp_path):
    import warnings

    from optlab.models.user_models import from_module
    from optlab.recipes.recipe import UnsupportedRecipe
    from optlab.testing import ScoresOnly, feature_inputs

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline, data = from_module(ScoresOnly().eval(), feature_inputs(rows=40))
    with pytest.raises(UnsupportedRecipe, match="trains a student, but this data has no rows apart from the 40"):
        apply(Distill(epochs=1), baseline.model, data, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []
