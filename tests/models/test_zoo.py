"""optlab.models.zoo: reference models (build, train, cache, baseline Candidate, ONNX export) and offline use."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from optlab.bench.zoo import logits, metric
from optlab.models import weights, zoo
from optlab.models.training import to_tensors


def test_sizes_and_bad_names(digits_data):
    assert set(zoo.SIZES) == {"digits", "bids", "intents"}
    assert all(zoo.SIZES[d] == ("teacher", "student") for d in zoo.SIZES)
    with pytest.raises(ValueError, match="valid names: digits, bids, intents"):
        zoo.get("mnist")
    with pytest.raises(ValueError, match="valid sizes: teacher, student"):
        zoo.build("digits", "huge", digits_data)


@pytest.mark.parametrize("name, floor", [("digits", 0.8), ("bids", 0.65), ("intents", 0.35)])
def test_smoke_models_learn(name, floor, request):
    data = request.getfixturevalue(f"{name}_data")
    model = request.getfixturevalue(f"{name}_model")
    assert not model.training
    _, value = metric(data, logits(model, data.test))
    assert value > floor, f"{name} smoke model scored {value:.3f}; chance is far below {floor}"


@pytest.mark.parametrize("name", ["digits", "bids", "intents"])
def test_logits_shapes_on_requests(name, request):
    data = request.getfixturevalue(f"{name}_data")
    model = request.getfixturevalue(f"{name}_model")
    with torch.inference_mode():
        for batch in data.requests[:5]:
            out = model(**to_tensors(batch))
            n = len(next(iter(batch.values())))
            assert isinstance(out, torch.Tensor)
            assert out.shape == ((n,) if data.task == "binary" else (n, data.num_classes))


def test_student_smaller_than_teacher(digits_data, bids_data, intents_data):
    for name, data in (("digits", digits_data), ("bids", bids_data), ("intents", intents_data)):
        teacher, student = zoo.build(name, "teacher", data), zoo.build(name, "student", data)
        assert weights.param_count(student) < weights.param_count(teacher)
    bert = zoo.build("intents", "teacher", intents_data).bert
    assert bert.config.num_hidden_layers == 4
    assert zoo.build("intents", "student", intents_data).bert.config.num_hidden_layers == 2


def test_build_seed_sets_initial_weights(digits_data):
    a, b, c = (zoo.build("digits", "student", digits_data, seed=s) for s in (0, 0, 1))
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_second_get_uses_cache(digits_data, digits_model):
    trained = sum(zoo.TRAINED.values())
    again = zoo.get("digits", "teacher", smoke=True, data=digits_data)
    assert sum(zoo.TRAINED.values()) == trained, "a cached model must not be retrained"
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in digits_model.state_dict().items())
    assert again.optlab_train_log == digits_model.optlab_train_log


def test_corrupt_model_cache_retrains_to_identical_weights(digits_data, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTLAB_CACHE", str(tmp_path))
    first = zoo.get("digits", "student", smoke=True, data=digits_data)
    (path,) = (tmp_path / "models").glob("digits-student-smoke-*.pt")
    with open(path, "r+b") as f:
        f.truncate(100)
    count = zoo.TRAINED[("digits", "student", True)]
    second = zoo.get("digits", "student", smoke=True, data=digits_data)
    assert zoo.TRAINED[("digits", "student", True)] == count + 1, "a corrupt cache file is rebuilt, not loaded"
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items()), \
        "same seed -> same weights"


def _example(data, rows=5):
    return to_tensors(data.test.take(slice(0, rows)).inputs)


@pytest.mark.parametrize("name, size", [(d, s) for d in ("digits", "bids", "intents") for s in ("teacher", "student")])
def test_onnx_export_dynamic_axes(name, size, request, tmp_path):
    import onnxruntime as ort

    data = request.getfixturevalue(f"{name}_data")
    model = request.getfixturevalue(f"{name}_model") if size == "teacher" else zoo.build(name, size, data)
    names = data.input_names
    dynamic = {k: ({0: "batch", 1: "sequence"} if name == "intents" else {0: "batch"}) for k in names}
    dynamic["logits"] = {0: "batch"}
    example = next(data.test.batches(3))
    path = tmp_path / f"{name}-{size}.onnx"
    torch.onnx.export(model, (), str(path), kwargs=to_tensors(example), input_names=names, output_names=["logits"],
                      dynamic_axes=dynamic, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in data.requests[:4]:  # other batch sizes (and lengths, for text)
        got = session.run(None, {k: batch[k] for k in names})[0]
        with torch.inference_mode():
            want = model(**to_tensors(batch)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_baseline_candidate_and_fresh_loader(digits_data, digits_model):
    import importlib

    cand = zoo.baseline(digits_model)
    batch = digits_data.requests[0]
    out = cand.predict(batch)
    assert isinstance(out, np.ndarray) and out.shape == (len(batch["pixels"]), 10)
    assert cand.family == "baseline" and cand.runtime == "torch" and cand.size_bytes > 10_000
    assert cand.meta["param_count"] == weights.param_count(digits_model)
    module, func = cand.loader.split(":")
    predict = getattr(importlib.import_module(module), func)(cand.artifact_path, **cand.loader_options)
    np.testing.assert_allclose(predict(batch), out, rtol=1e-5, atol=1e-6)


def test_offline_loaders_and_zoo(tmp_path, monkeypatch):
    """Nothing reaches the network: generate every dataset and train/build models with sockets blocked."""
    from optlab.data import datasets as optlab_data

    def blocked(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setenv("OPTLAB_CACHE", str(tmp_path))
    datasets = {name: optlab_data.load(name, smoke=True) for name in optlab_data.DATASETS}
    model = zoo.get("digits", "student", smoke=True, data=datasets["digits"])
    assert zoo.baseline(model).predict(datasets["digits"].requests[0]).ndim == 2
    for name in ("bids", "intents"):
        for size in zoo.SIZES[name]:
            built = zoo.build(name, size, datasets[name])
            with torch.inference_mode():
                assert built(**to_tensors(datasets[name].requests[0])).ndim >= 1


def test_training_settings_carry_their_thread_count_to_train_and_to_distill(digits_data, tmp_path, monkeypatch):
    """Every setting trains on a fixed thread count (the same weights on any machine); the full intents
    models on two, the others on TRAIN_THREADS; the Distill budget uses the very same settings."""
    from optlab.models import training
    from optlab.techniques.distill import student_budget

    assert zoo.training("intents", False)["threads"] == 2
    assert zoo.training("digits", True)["threads"] == zoo.TRAIN_THREADS == 1
    seen = {}
    real_train = training.train

    def spy(model, data, **kwargs):
        seen.update(kwargs)
        return real_train(model, data, **kwargs)
    monkeypatch.setattr(training, "train", spy)
    monkeypatch.setenv("OPTLAB_CACHE", str(tmp_path))
    zoo.get("digits", "student", smoke=True, data=digits_data, fresh=True)
    assert seen["threads"] == zoo.training("digits", True)["threads"]
    budget = student_budget(digits_data)
    assert {k: budget[k] for k in ("epochs", "lr", "batch_size", "threads")} == {
        k: zoo.training("digits", True)[k] for k in ("epochs", "lr", "batch_size", "threads")}
