"""Pruning on the zoo's real architectures (CNN, click MLP, small BERT) over small slices of the
smoke data: sparsity actually reached, zeros kept through fine-tuning, a compressed artifact
smaller than the dense one, layers that really shrink and still run (and export to ONNX),
the caller's model untouched, and clear errors for bad input or a diverging fine-tune."""
import dataclasses
import importlib

import numpy as np
import pytest
import torch
from torch import nn

from optlab.models import zoo
from optlab.models.training import TrainingDiverged
from optlab.recipes.recipe import Prune
from optlab.techniques.registry import apply


def small(data, train=384, test=256):
    """The same dataset cut to a few hundred rows, so a fine-tune takes a fraction of a second."""
    return dataclasses.replace(data, train=data.train.take(slice(0, train)), validation=data.validation.take(
        slice(0, test)), test=data.test.take(slice(0, test)), calibration=data.calibration.take(slice(0, 64)),
        slices={k: v[:test] for k, v in data.slices.items()})


@pytest.fixture(scope="module")
def digits(digits_data):
    data = small(digits_data)
    return zoo.build("digits", "teacher", data), data


@pytest.fixture(scope="module")
def bids(bids_data):
    data = small(bids_data)
    return zoo.build("bids", "teacher", data), data


@pytest.fixture(scope="module")
def intents(intents_data):
    data = small(intents_data, train=128, test=64)
    return zoo.build("intents", "teacher", data), data


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _reload(candidate):
    """What a fresh process does with the candidate's loader string."""
    module, function = candidate.loader.split(":")
    return getattr(importlib.import_module(module), function)(candidate.artifact_path, **candidate.loader_options)


def _dense_params(model):
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def _weights(model, names):
    modules = dict(model.named_modules())
    return [modules[n].weight for n in names]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_reaches_sparsity_and_keeps_zeros_through_finetune(scope, digits, tmp_path):
    model, data = digits
    before = _state(model)
    candidate = apply(Prune(0.6, scope=scope, finetune_epochs=1), model, data, workdir=tmp_path)
    assert _same(before, _state(model)), "the caller's model was mutated"
    meta = candidate.meta
    assert abs(meta["sparsity"] - 0.6) < 0.01
    assert meta["finetune_epochs_run"] == 1
    pruned = [n for n, m in candidate.model.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv2d)) and n != meta["output_layer"]]
    zeros = [float((w == 0).float().mean()) for w in _weights(candidate.model, pruned)]
    assert abs(sum((w == 0).sum().item() for w in _weights(candidate.model, pruned))
               / sum(w.numel() for w in _weights(candidate.model, pruned)) - 0.6) < 0.01  # zeros survived training
    if scope == "layer":
        assert all(abs(z - 0.6) < 0.01 for z in zeros)
    head = dict(candidate.model.named_modules())[meta["output_layer"]]
    assert float((head.weight == 0).float().mean()) < 0.01, "the output layer must not be pruned"
    assert not any(hasattr(m, "weight_mask") for m in candidate.model.modules()), "prune.remove was not applied"
    assert meta["params_after"] == meta["params_before"]


@pytest.mark.parametrize("fixture", ["digits", "bids"])
def test_unstructured_artifact_is_compressed_and_reloads(fixture, request, tmp_path):
    model, data = request.getfixturevalue(fixture)
    candidate = apply(Prune(0.7, finetune_epochs=0), model, data, workdir=tmp_path)
    meta = candidate.meta
    pruned_weights = sum(m.weight.numel() for n, m in model.named_modules()
                         if isinstance(m, (nn.Linear, nn.Conv2d)) and n != meta["output_layer"])
    # bitmask + survivors: each pruned fp32 weight costs 1 bit + 0.3 * 4 bytes instead of 4 bytes
    assert candidate.size_bytes == meta["compressed_size_bytes"]
    assert meta["dense_size_bytes"] - meta["compressed_size_bytes"] > 0.8 * pruned_weights * (4 - 1.2 - 0.125)
    if fixture == "digits":  # conv/linear weights are the whole model; bids' embedding tables stay dense
        assert meta["compressed_size_bytes"] < 0.6 * meta["dense_size_bytes"]
    batch = next(data.test.batches(32))
    np.testing.assert_array_equal(_reload(candidate)(batch), candidate.predict(batch))
    assert candidate.family == "pruning" and candidate.runtime == "torch" and candidate.name == Prune(
        0.7, finetune_epochs=0).name


@pytest.mark.parametrize("fixture", ["digits", "bids"])
def test_structured_shrinks_layers_keeps_head_and_exports(fixture, request, tmp_path):
    import onnxruntime as ort

    from optlab.techniques.onnx_export import export_onnx

    model, data = request.getfixturevalue(fixture)
    before = _state(model)
    candidate = apply(Prune(0.5, structured=True, finetune_epochs=1), model, data, workdir=tmp_path)
    assert _same(before, _state(model))
    meta = candidate.meta
    assert meta["params_after"] == sum(p.numel() for p in candidate.model.parameters()) < meta["params_before"]
    assert _dense_params(candidate.model) < 0.6 * _dense_params(model)  # half the units: ~1/4 of inner weights
    assert abs(meta["sparsity"] - 0.5) < 0.02  # measured: output units removed from the pruned layers
    head = dict(candidate.model.named_modules())[meta["output_layer"]]
    original_head = dict(model.named_modules())[meta["output_layer"]]
    assert head.out_features == original_head.out_features
    for new, old in zip(candidate.model.modules(), model.modules(), strict=False):
        if isinstance(old, nn.Embedding):
            assert new.weight.shape == old.weight.shape, "embeddings must keep their vocabulary and width"
    batch = next(data.test.batches(16))
    out = candidate.predict(batch)
    assert out.shape == zoo.baseline(model).predict(batch).shape and np.isfinite(out).all()
    np.testing.assert_array_equal(_reload(candidate)(batch), out)
    onnx = export_onnx(candidate.model, data, tmp_path / "pruned.onnx")
    session = ort.InferenceSession(str(onnx.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, batch)[0], out, rtol=1e-4, atol=1e-4)


def test_structured_bert_prunes_heads_and_intermediate_units(intents, tmp_path):
    model, data = intents
    candidate = apply(Prune(0.5, structured=True, scope="layer", finetune_epochs=0), model, data, workdir=tmp_path)
    meta = candidate.meta
    assert meta["heads_after"] == meta["heads_before"] // 2
    for layer in candidate.model.bert.bert.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads * attention.attention_head_size == attention.query.out_features
        assert attention.all_head_size == attention.query.out_features
        assert layer.intermediate.dense.out_features == model.bert.config.intermediate_size // 2
    embeddings = candidate.model.bert.bert.embeddings.word_embeddings
    assert embeddings.weight.shape == model.bert.bert.embeddings.word_embeddings.weight.shape
    batch = next(data.test.batches(8))
    assert candidate.predict(batch).shape == (len(batch["input_ids"]), data.num_classes)


def test_diverging_finetune_raises(digits, tmp_path):
    model, data = digits
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        apply(Prune(0.5, structured=True, finetune_epochs=3, finetune_lr=1e6), model, data, workdir=tmp_path)


class _HeadOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Linear(64, 10)

    def forward(self, pixels):
        return self.out(pixels.flatten(1))


class _NoLayers(nn.Module):
    def forward(self, pixels):
        return pixels.flatten(1)[:, :10]


@pytest.mark.parametrize("model", [_HeadOnly(), _NoLayers()])
def test_model_without_prunable_layers_is_rejected(model, digits, tmp_path):
    _, data = digits
    with pytest.raises(ValueError, match="no prunable layers"):
        apply(Prune(0.5), model, data, workdir=tmp_path)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range_is_rejected(sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        Prune(sparsity)


# --- an analyst's model and data (issue 13): never fine-tune on the evaluation rows ----------------

class Clicker(nn.Module):
    """An analyst's binary model with one score per row: (N, 1) logits."""

    def __init__(self, features=6, hidden=32):
        super().__init__()
        self.body = nn.Linear(features, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, features):
        return self.head(torch.relu(self.body(features)))


def _byom(module, rows=120, **kwargs):
    import warnings

    from optlab.models.user_models import from_module
    from optlab.testing import feature_inputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_module(module.eval(), feature_inputs(rows=rows), **kwargs)


def test_byom_fine_tuning_without_a_training_share_is_refused_before_work(tmp_path):
    from optlab.recipes.recipe import UnsupportedRecipe

    torch.manual_seed(0)
    baseline, data = _byom(Clicker())
    with pytest.raises(UnsupportedRecipe, match="no rows apart from the 120 that quality is measured on.*"
                                                "finetune_share=0.25.*finetune_epochs=0"):
        apply(Prune(0.5), baseline.model, data, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before any artifact was written
    apply(Prune(0.5, finetune_epochs=0), baseline.model, data, workdir=tmp_path)  # nothing trains: fine


def test_byom_fine_tuning_share_is_held_out_from_quality(tmp_path):
    from optlab.instruments.latency import Workload
    from optlab.study.study import RunOptions, Study

    torch.manual_seed(0)
    labels = np.random.default_rng(0).integers(0, 2, 120)
    baseline, data = _byom(Clicker(), labels=labels, metric="auc", finetune_share=0.25)
    assert len(data.train) == 30 and len(data.test) == 90
    train_rows = {tuple(r) for r in data.train.inputs["features"].round(6)}
    assert not train_rows & {tuple(r) for r in data.test.inputs["features"].round(6)}
    results = Study(baseline, data, [Prune(0.5)], workload=Workload.smoke(memory=False, cold_start=False),
                    results_dir=tmp_path / "r", options=RunOptions(progress=False)).run()
    assert list(results["status"]) == ["ok", "ok"], results["error"].tolist()  # (N, 1) + labels: no "Target 1"
    assert set(results["rows"]) == {90}
    assert "fine-tuning trains on 30 of the 120 given rows" in results.loc[1, "notes"]


def test_byom_unlabelled_pruning_learns_from_the_baseline_outputs(tmp_path):
    torch.manual_seed(0)
    baseline, data = _byom(Clicker(), finetune_share=0.3)
    candidate = apply(Prune(0.5, finetune_epochs=2), baseline.model, data, workdir=tmp_path)
    assert np.isfinite(candidate.meta["finetune_final_loss"])
    assert any("unpruned model's outputs" in note for note in candidate.meta["notes"])
    batch = data.test.inputs
    assert candidate.predict(batch).shape == baseline.predict(batch).shape == (len(data.test), 1)


class FlatClicker(Clicker):
    def forward(self, features):
        return super().forward(features)[:, 0]  # (N,) logits


def test_byom_binary_vector_output_fine_tunes(tmp_path):
    torch.manual_seed(0)
    labels = np.random.default_rng(1).integers(0, 2, 120)
    baseline, data = _byom(FlatClicker(), labels=labels, metric="auc", finetune_share=0.25)
    candidate = apply(Prune(0.5), baseline.model, data, workdir=tmp_path)
    assert np.isfinite(candidate.meta["finetune_final_loss"])


def test_threads_are_restored_after_pruning(digits, tmp_path):
    model, data = digits
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        apply(Prune(0.3, finetune_epochs=1), model, data, threads=1, workdir=tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
