"""NNCF weight compression of the OpenVINO export as recipes: each recipe exported from a tiny Llama and
its IR read back (int4 really u4/i4, int8 really u8/i8, the embedding and head where NNCF put them),
the recipes round-trip through JSON, the IR's own perplexity matches the torch model's for fp32, and a
recipe the model cannot take is refused in one line before anything is exported."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab import recipes
from optlab.generation.weights import calibration_windows
from optlab.models import language
from optlab.recipes.openvino import OVWeights

pytest.importorskip("nncf")
pytest.importorskip("optimum.intel")

from optlab.generation import openvino_engine, openvino_weights  # noqa: E402
from optlab.generation.openvino_ir import inspect_ir  # noqa: E402

VOCAB = 96


@pytest.fixture(scope="module")
def model():
    """Hidden 64, MLP 128: group sizes 32 and 64 divide every layer, 48 none; untied head."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=False)
        return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def folders(model):
    calibration = lambda: calibration_windows(None, VOCAB, count=4)  # noqa: E731
    return {name: openvino_engine.export(model, name, calibration=calibration)
            for name in ("fp32", "int8", "int4", "int4-awq")}


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(0)
    return language.windows([rng.integers(0, VOCAB, size=256)], 64)


def test_int4_is_stored_as_4_bit_integers_except_where_nncf_keeps_int8(folders):
    for name in ("int4", "int4-awq"):
        stored = inspect_ir(folders[name])
        linear = [m for m in stored.matrices if m.role == "linear"]
        assert len(linear) == 14 and {m.element_type for m in linear} <= {"u4", "i4"}
        assert {m.role: m.storage for m in stored.matrices if m.role != "linear"} == {"embedding": "int8",
                                                                                       "lm_head": "int8"}
        assert stored.constants.get("u4", 0) + stored.constants.get("i4", 0) >= 14
        assert stored.describe("int4").startswith("int4 on 14 of 16 matrices")
        assert stored.describe("int4").endswith("int8: embedding, lm_head")


def test_the_recipe_fields_reach_nncf_symmetric_all_layers_and_a_ratio(model):
    sym_all = inspect_ir(openvino_engine.export(model, OVWeights(bits=4, sym=True, all_layers=True)))
    assert {m.element_type for m in sym_all.matrices} == {"i4"} and len(sym_all.matrices) == 16
    assert set(sym_all.constants) == {"i4", "f16"}  # symmetric: scales, no zero points
    half = inspect_ir(openvino_engine.export(model, OVWeights(bits=4, group_size=-1, ratio=0.5)))
    linear = [m.storage for m in half.matrices if m.role == "linear"]
    assert 0 < linear.count("int4") < len(linear) and set(linear) == {"int4", "int8"}
    assert f"int8: embedding, {linear.count('int8')} linear layers, lm_head" in half.describe("int4")


def test_int8_is_all_8_bit_and_fp32_all_float(folders):
    int8, fp32 = inspect_ir(folders["int8"]), inspect_ir(folders["fp32"])
    assert len(int8.matrices) == 16 and {m.element_type for m in int8.matrices} <= {"u8", "i8"}
    assert int8.share("int8") == 1.0 and "f32" not in int8.constants
    assert {m.element_type for m in fp32.matrices} == {"f32"} and fp32.share("int4") == 0.0
    sizes = [openvino_engine.ir_mb(folders[name]) for name in ("fp32", "int8", "int4")]
    assert sizes[0] > sizes[1] > sizes[2]


def test_awq_calibrates_and_changes_the_weights(folders, model):
    import openvino as ov

    def weights(folder):
        return {op.get_friendly_name(): op.get_data().copy() for op in ov.Core().read_model(
            str(folders[folder] / "openvino_model.xml")).get_ordered_ops()
            if op.get_type_name() == "Constant" and "_proj.weight" in op.get_friendly_name()}

    plain, awq = weights("int4"), weights("int4-awq")
    assert len(plain) >= 3 * 14 and plain.keys() == awq.keys()  # each layer's weights, scales, zero points
    assert any(not np.array_equal(plain[k], awq[k]) for k in plain)  # AWQ ran: its scales moved the weights
    with pytest.raises(ValueError, match="data-aware .*pass calibration="):
        openvino_engine.export(model, "int4-awq")


def test_the_ir_perplexity_is_the_torch_models_for_fp32_and_finite_compressed(folders, model, windows):
    torch_ppl = language.perplexity(model, windows)
    ov_ppl = {name: openvino_weights.perplexity(folder, windows) for name, folder in folders.items()}
    assert math.isclose(ov_ppl["fp32"], torch_ppl, rel_tol=1e-4)
    assert all(math.isfinite(p) and p > 1 for p in ov_ppl.values())
    assert ov_ppl["int4"] != ov_ppl["fp32"]  # measured on the compressed IR, not the torch weights
    assert openvino_weights.tokens_per_s(openvino_weights.load(folders["int4"]), [5, 6, 7], 4) > 0


def test_recipes_round_trip_through_json_and_their_names():
    for recipe in [*openvino_weights.PRESETS.values(), OVWeights(bits=4, group_size=-1, ratio=0.8, sym=True),
                   OVWeights(bits=8, sym=True), OVWeights(bits=4, all_layers=True)]:
        assert recipes.from_json(recipe.to_json()) == recipe
        assert recipes.parse(recipe.name) == recipe
        assert openvino_weights.recipe_for(recipe.name) == recipe
    assert json.loads(OVWeights(bits=4, awq=True).to_json()) == {"kind": "ov_weights", "bits": 4, "awq": True}
    assert openvino_weights.recipe_for("int4") == OVWeights(bits=4) and OVWeights(bits=4).label == "NNCF int4 g32 asym"


def test_bad_recipes_are_refused_in_one_line_before_exporting(model, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("exported a refused recipe")

    monkeypatch.setattr(openvino_weights, "compress", no_export)
    cases = [(lambda: OVWeights(bits=3), "OVWeights.bits=3 is not allowed; choose one of: 32, 8, 4"),
             (lambda: OVWeights(bits=8, group_size=64), "group_size=64 does not apply here"),
             (lambda: OVWeights(bits=4, ratio=1.5), "ratio=1.5 is out of range"),
             (lambda: openvino_engine.export(model, OVWeights(bits=4, group_size=48)),
              "group_size=48 does not divide the 64 input channels of model.layers.0.self_attn.q_proj"),
             (lambda: openvino_engine.export(model, "int3"), "unknown weights 'int3'")]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)
    assert openvino_weights.largest_group_size(model, 128) == 64
