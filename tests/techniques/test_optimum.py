"""Hugging Face transformers through optimum, on a tiny BERT built from a BertConfig here and
trained for seconds on intents rows: the ONNX export takes the data's inputs, O2 leaves the
transformer fusions in the graph (O1 does not), dynamic and static int8 agree with fp32 within
tolerance under the CPU's own preset, everything loads through ORTModelForSequenceClassification,
padding to the longest row and to a fixed length give the same logits, INC runs on the same
model, bad input gets a clear message, and no test touches the network."""
import dataclasses
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from optlab.models.architectures import BertClassifier
from optlab.models.training import to_tensors, train
from optlab.recipes import Optimum, Quantize, UnsupportedRecipe, from_json, parse
from optlab.techniques import optimum
from optlab.techniques.registry import apply


@pytest.fixture(scope="module")
def tiny(intents_data):
    """A 2-layer, 32-wide BERT trained for one epoch on 1,024 intents rows (a few seconds)."""
    data = dataclasses.replace(intents_data, train=intents_data.train.take(slice(0, 1024)),
                               test=intents_data.test.take(slice(0, 256)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertClassifier(vocab_size=data.meta["vocab_size"], num_classes=data.num_classes, layers=2, hidden=32,
                               heads=2, intermediate=64, max_length=data.meta["max_length"], dropout=0.0)
    train(model, data, epochs=1, lr=3e-3, batch_size=64, threads=1)
    return model.eval(), data


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    model, data = tiny
    workdir = tmp_path_factory.mktemp("optimum")
    recipes = {"o1": Optimum("O1"), "o2": Optimum("O2"), "dynamic": Optimum("O2", quantize="dynamic-int8"),
               "static": Optimum("O2", quantize="static-int8", calibration_samples=64)}
    return {k: apply(r, model, data, threads=1, workdir=workdir) for k, r in recipes.items()}


def _ops(candidate) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(candidate.artifact_path)).graph.node)


def _logits(model, batch):
    with torch.inference_mode():
        return model(**to_tensors(batch)).numpy()


def test_recipe_names_round_trip_and_validate():
    recipe = Optimum("O2", quantize="static-int8", calibration="entropy")
    assert recipe.name == "optimum(level=O2, quantize=static-int8, calibration=entropy)"
    assert from_json(recipe.to_json()) == recipe and parse(recipe.name) == recipe
    with pytest.raises(ValueError, match="fp16 level for GPUs"):
        Optimum("O4")
    with pytest.raises(ValueError, match="calibration.*applies only to quantize='static-int8'"):
        Optimum("O2", quantize="dynamic-int8", calibration="entropy")


def test_export_takes_the_data_inputs_and_records_it(built):
    exported = onnx.load(built["o2"].meta["exported"])
    assert [i.name for i in exported.graph.input] == ["input_ids", "attention_mask"]
    assert any("without token_type_ids" in note for note in built["o2"].meta["notes"])


def test_o2_fuses_attention_gelu_layernorm_and_embeddings_o1_does_not(built):
    o2, o1 = _ops(built["o2"]), _ops(built["o1"])
    assert o2["Attention"] == 2 and o2["EmbedLayerNormalization"] == 1
    assert o2["BiasGelu"] + o2["Gelu"] + o2["FastGelu"] == 2 and o2["SkipLayerNormalization"] >= 2
    assert all(built["o2"].meta["fusions"].values())
    assert o1["Attention"] == 0 and o1["EmbedLayerNormalization"] == 0 and o1["MatMul"] > 0


def test_fp32_candidates_match_pytorch(tiny, built):
    model, data = tiny
    for batch in data.requests[:4]:
        want = _logits(model, batch)
        for key in ("o1", "o2"):
            np.testing.assert_allclose(built[key].predict(batch), want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("key, quantized_op", [("dynamic", "MatMulInteger"), ("static", "QuantizeLinear")])
def test_int8_agrees_with_fp32_and_records_the_cpu_preset(tiny, built, key, quantized_op):
    model, data = tiny
    candidate = built[key]
    assert candidate.family == "quantization" and _ops(candidate)[quantized_op] > 0
    assert candidate.meta["preset"] == optimum.choose_preset("auto")
    assert any(f"AutoQuantizationConfig.{candidate.meta['preset']}" in n for n in candidate.meta["notes"])
    assert candidate.meta["quantized_ops"] > 0 and candidate.meta["quantized_weight_share"] > 0  # as ORT's rows
    assert any(n.startswith("int8 check: ") for n in candidate.meta["notes"])
    assert optimum.artifact_notes(candidate.artifact_path)["preset"] == candidate.meta["preset"]
    assert candidate.size_bytes < 0.6 * built["o2"].size_bytes
    got = np.concatenate([candidate.predict(b) for b in data.test.batches(64)])
    want = np.concatenate([_logits(model, b) for b in data.test.batches(64)])
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95
    assert np.abs(got - want).max() < 0.25 * np.abs(want).max()


def test_loaded_through_ortmodel_in_a_fresh_loader(built, tiny):
    from optimum.onnxruntime import ORTModelForSequenceClassification

    _, data = tiny
    candidate = built["dynamic"]
    assert isinstance(optimum.load_model(candidate.artifact_path, threads=1), ORTModelForSequenceClassification)
    module, _, name = candidate.loader.partition(":")
    assert (module, name) == ("optlab.techniques.optimum", "load_predict")
    again = optimum.load_predict(candidate.artifact_path, **candidate.loader_options)
    batch = data.requests[0]
    np.testing.assert_array_equal(again(batch), candidate.predict(batch))


def test_padding_to_longest_and_to_max_length_give_the_same_logits(built, tiny):
    _, data = tiny
    candidate = built["o2"]
    batch = next(b for b in data.requests if len(b["input_ids"]) >= 4)
    longest, fixed = optimum.padded(batch, "longest"), optimum.padded(batch, "max_length", max_length=128)
    assert longest["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())
    assert fixed["input_ids"].shape[1] == 128
    assert (fixed["attention_mask"][:, longest["input_ids"].shape[1]:] == 0).all()
    np.testing.assert_allclose(candidate.predict(longest), candidate.predict(fixed), rtol=1e-4, atol=1e-4)
    assert optimum.padding_share(batch, "max_length") > optimum.padding_share(batch, "longest")
    with pytest.raises(ValueError, match="choose one of"):
        optimum.padded(batch, "bucket")
    frame = optimum.compare_padding(candidate, data.test, batch_size=16, batches=4, budget_s=0.1)
    assert list(frame["padding"]) == ["max_length", "longest", "bucketed"]
    fixed_row, longest_row, bucketed_row = (frame.iloc[i] for i in range(3))
    assert bucketed_row["tokens_per_batch"] <= longest_row["tokens_per_batch"] < fixed_row["tokens_per_batch"]
    assert fixed_row["tokens_per_batch"] == 16 * 128 and fixed_row["throughput_x"] == 1.0
    assert bucketed_row["padding_share"] <= longest_row["padding_share"] < fixed_row["padding_share"]


def test_preset_follows_the_cpu_flags_and_refuses_what_it_cannot_run():
    assert optimum.choose_preset("auto", frozenset({"avx2", "avx512f", "avx512_vnni"}), "x86_64") == "avx512_vnni"
    assert optimum.choose_preset("auto", frozenset({"avx2", "avx512f"}), "x86_64") == "avx512"
    assert optimum.choose_preset("auto", frozenset({"avx2"}), "x86_64") == "avx2"
    assert optimum.choose_preset("auto", frozenset({"asimd"}), "aarch64") == "arm64"
    with pytest.raises(UnsupportedRecipe, match="presets it can run: avx2"):
        optimum.choose_preset("avx512_vnni", frozenset({"avx2"}), "x86_64")
    with pytest.raises(UnsupportedRecipe, match="no optimum quantization preset"):
        optimum.choose_preset("auto", frozenset({"sse4_2"}), "x86_64")


def test_a_local_save_pretrained_folder_goes_through_the_same_path(tiny, tmp_path):
    model, data = tiny
    model.bert.save_pretrained(tmp_path / "my-model")
    candidate = apply(Optimum("O2"), str(tmp_path / "my-model"), data, threads=1, workdir=tmp_path / "work")
    batch = data.requests[2]
    np.testing.assert_allclose(candidate.predict(batch), _logits(model, batch), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="not a save_pretrained folder"):
        apply(Optimum("O2"), str(tmp_path), data, workdir=tmp_path / "work")


def test_data_with_token_type_ids_for_a_one_token_type_bert_exports_without_them(tiny, tmp_path):
    """A tokenizer that sends token_type_ids (as BERT tokenizers do) with a model whose token-type
    table has one row: optimum's dummy ids (0 or 1) would index past it; the export drops the input."""
    model, data = tiny
    assert model.bert.config.type_vocab_size == 1

    def with_types(split):
        return dataclasses.replace(split, inputs=split.inputs | {"token_type_ids": np.zeros_like(
            split.inputs["input_ids"])})
    typed = dataclasses.replace(data, train=with_types(data.train), test=with_types(data.test),
                                calibration=with_types(data.calibration))
    candidate = apply(Optimum("O1"), model, typed, threads=1, workdir=tmp_path)
    assert [i.name for i in onnx.load(candidate.meta["exported"]).graph.input] == ["input_ids", "attention_mask"]
    assert any("one token type" in note for note in candidate.meta["notes"])
    batch = {k: v[:8] for k, v in typed.test.inputs.items()}
    np.testing.assert_allclose(candidate.predict(batch), _logits(model, {k: batch[k] for k in data.test.inputs}),
                               rtol=1e-3, atol=1e-4)


def test_bad_input_gets_a_clear_message(tiny, tmp_path):
    model, data = tiny
    with pytest.raises(UnsupportedRecipe, match="needs a Hugging Face transformers model"):
        apply(Optimum("O2"), torch.nn.Linear(4, 2), data, workdir=tmp_path)
    few = dataclasses.replace(data, calibration=data.calibration.take(slice(0, 4)))
    with pytest.raises(ValueError, match="calibration set has 4 rows"):
        apply(Optimum("O2", quantize="static-int8"), model, few, workdir=tmp_path)


def test_inc_weight_only_runs_on_the_same_bert(tiny, tmp_path):
    model, data = tiny
    candidate = apply(Quantize("weight-only-int8", runtime="inc"), model, data, workdir=tmp_path)
    batch = data.requests[1]
    got, want = candidate.predict(batch), _logits(model, batch)
    assert got.shape == want.shape and (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_inc_gptq_and_autotune_on_the_same_bert_stay_offline(tiny, tmp_path):
    """GPTQ calibrates on the calibration split (INC would otherwise look the model up on the hub);
    autotune's winner is judged by optlab's evaluator."""
    model, data = tiny
    gptq = apply(Quantize("weight-only-int4", runtime="inc", algorithm="gptq", calibration_samples=32), model, data,
                 workdir=tmp_path / "gptq")
    assert gptq.meta["inc_config"].startswith("GPTQConfig(bits=4") and gptq.meta["calibration_rows"] == 32
    batch = data.requests[1]
    got, want = gptq.predict(batch), _logits(model, batch)
    assert got.shape == want.shape and (got.argmax(1) == want.argmax(1)).mean() >= 0.5
    tuned = apply(Quantize("autotune", runtime="inc", tolerable_loss=0.05), model, data, workdir=tmp_path / "tune")
    trials = tuned.meta["tuning_trials"]
    assert trials[0]["config"] == "baseline fp32" and tuned.meta["inc_config"] in [t["config"] for t in trials[1:]]
