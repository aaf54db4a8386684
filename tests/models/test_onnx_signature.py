"""Signatures of real ONNX files of several shapes, and inputs checked against them."""
from __future__ import annotations

import numpy as np
import pytest

from optlab.models.onnx_signature import InputMismatch, batch_axes, conform, read_signature
from optlab.testing import TinyCNN, TokenClassifier, TwoHeads, cnn_inputs, export, feature_inputs, token_inputs
from optlab.testing.graphs import streaming_inputs


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user-models")
    return {
        "cnn": export(TinyCNN(), cnn_inputs(), root / "cnn.onnx"),
        "tokens": export(TokenClassifier(), token_inputs(), root / "tokens.onnx", dynamic_seq=True),
        "two_heads": export(TwoHeads(), feature_inputs(), root / "two_heads.onnx", output_names=("scores", "value")),
        "opset11": export(TinyCNN(), cnn_inputs(), root / "cnn11.onnx", opset=11),
    }


def test_reads_names_dtypes_and_dynamic_axes(onnx_files):
    cnn = read_signature(onnx_files["cnn"])
    assert cnn.input_names == ("image",) and cnn.inputs[0].dtype == "float32"
    assert cnn.inputs[0].shape == ("batch", 1, 8, 8)
    tokens = read_signature(onnx_files["tokens"])
    assert tokens.input_names == ("input_ids", "attention_mask")
    assert [s.dtype for s in tokens.inputs] == ["int64", "int64"]
    assert tokens.inputs[0].shape == ("batch", "sequence")
    two = read_signature(onnx_files["two_heads"])
    assert two.output_names == ("scores", "value")
    assert read_signature(onnx_files["opset11"]).opset == 11


def test_conform_casts_within_a_kind_and_accepts_any_dynamic_size(onnx_files):
    sig = read_signature(onnx_files["tokens"])
    given = {k: v.astype(np.int32) for k, v in token_inputs(rows=3, seq=40).items()}
    out = conform(given, sig)
    assert out["input_ids"].dtype == np.int64 and out["input_ids"].shape == (3, 40)


@pytest.mark.parametrize("bad, message", [
    ({"pixels": np.zeros((2, 1, 8, 8), np.float32)}, "missing ['image'], unexpected ['pixels']"),
    ({"image": np.zeros((2, 1, 8, 8), np.int64)}, "dtype int64 but the model expects float32"),
    ({"image": np.zeros((2, 8, 8), np.float32)}, "has 3 dimensions"),
    ({"image": np.zeros((2, 1, 9, 8), np.float32)}, "axis 2 has size 9 but the model fixes it to 8"),
])
def test_mismatches_say_what_the_model_expects(onnx_files, bad, message):
    with pytest.raises(InputMismatch) as err:
        conform(bad, read_signature(onnx_files["cnn"]))
    assert message in str(err.value)
    assert "image: float32[batch, 1, 8, 8]" in str(err.value)


def test_rows_must_agree_across_inputs(onnx_files):
    given = token_inputs(rows=4)
    given["attention_mask"] = given["attention_mask"][:3]
    with pytest.raises(InputMismatch, match="number of rows"):
        conform(given, read_signature(onnx_files["tokens"]))


def test_not_an_onnx_file_is_named(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(ValueError, match="is not a valid ONNX model"):
        read_signature(bogus)
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        read_signature(tmp_path / "missing.onnx")


# --- graphs as other exporters write them (issue 13) ---------------------------------------------

def test_a_minus_one_batch_dimension_is_dynamic(tmp_path):
    from optlab.testing import constant_weight_mlp_inputs, constant_weight_mlp_onnx

    signature = read_signature(constant_weight_mlp_onnx(tmp_path / "m.onnx", batch_dim=-1))
    assert signature.inputs[0].shape == (None, 16) and signature.outputs[0].shape == (None, 4)
    assert conform(constant_weight_mlp_inputs(rows=16), signature)["x"].shape == (16, 16)


def test_a_scalar_and_a_state_batched_on_axis_1_are_inferred(tmp_path):
    from optlab.models.onnx_signature import batch_axes, output_axes
    from optlab.testing import streaming_inputs, streaming_onnx

    signature = read_signature(streaming_onnx(tmp_path / "s.onnx"))
    given = streaming_inputs(rows=6)
    assert batch_axes(signature, given) == {"x": 0, "sr": None, "state": 1}
    assert output_axes(signature) == {"logits": 0, "state_out": 1}
    assert batch_axes(signature, given, {"state": 2}) == {"x": 0, "sr": None, "state": 2}  # declared wins
    with pytest.raises(InputMismatch, match="'state' has 8 on its batch axis 2.*batch_axes"):
        conform(given, signature, batch_axes(signature, given, {"state": 2}))
    with pytest.raises(ValueError, match=r"batch_axes names \['hidden'\], which are not inputs"):
        batch_axes(signature, given, {"hidden": 1})
    with pytest.raises(ValueError, match=r"batch_axes\['state'\]=5: give an axis in 0..2"):
        batch_axes(signature, given, {"state": 5})


def test_the_batch_first_wrapper_computes_what_the_model_computes(tmp_path):
    import onnxruntime as ort

    from optlab.models.onnx_signature import batch_axes, batch_first, output_axes, to_rows
    from optlab.testing import streaming_inputs, streaming_onnx

    path = streaming_onnx(tmp_path / "s.onnx")
    signature = read_signature(path)
    given = streaming_inputs(rows=5)
    axes, outputs = batch_axes(signature, given), output_axes(signature)
    wrapped = batch_first(path, tmp_path / "w.onnx", axes, outputs)
    rows = to_rows(conform(given, signature, axes), axes)
    assert rows["sr"].shape == (5,) and rows["state"].shape == (5, 2, 8)
    assert all(spec.shape[0] == spec_batch for spec, spec_batch in
               zip(read_signature(wrapped).inputs, ("N", "batch", "N"), strict=True))
    logits, state = ort.InferenceSession(str(path)).run(None, given)
    logits_w, state_w = ort.InferenceSession(str(wrapped)).run(None, rows)
    np.testing.assert_allclose(logits_w, logits, rtol=1e-6)
    np.testing.assert_allclose(state_w, np.moveaxis(state, 1, 0), rtol=1e-6)
    # row i of the wrapped model alone equals row i of the whole batch: requests can slice rows
    one = ort.InferenceSession(str(wrapped)).run(None, {k: v[2:3] for k, v in rows.items()})[0]
    np.testing.assert_allclose(one[0], logits_w[2], rtol=1e-5)


def test_a_fully_fixed_input_of_another_size_is_a_constant(tmp_path):
    import onnx

    from optlab.models.onnx_signature import batch_axes
    from optlab.testing import streaming_inputs, streaming_onnx

    model = onnx.load(str(streaming_onnx(tmp_path / "s.onnx")))
    sr = next(v for v in model.graph.input if v.name == "sr")
    sr.type.tensor_type.shape.dim.add().dim_value = 1  # sr: int64[1], as some exporters write a scalar
    onnx.save(model, str(tmp_path / "s1.onnx"))
    signature = read_signature(tmp_path / "s1.onnx")
    given = dict(streaming_inputs(rows=6), sr=np.array([16000], dtype=np.int64))
    assert batch_axes(signature, given) == {"x": 0, "sr": None, "state": 1}
    one_row = dict(streaming_inputs(rows=1), sr=np.array([16000], dtype=np.int64))
    assert batch_axes(signature, one_row)["sr"] == 0  # one row: batching it is as right as repeating it


def test_batch_first_renames_inputs_read_inside_if_branches(tmp_path):
    """A state batched on axis 1 and read only inside `If` branches: the wrapper feeds the branches
    the transposed state, and the all-dynamic output state is found on axis 1 by running the graph."""
    import onnxruntime as ort

    from optlab.models.onnx_signature import batch_first, observed_output_axes, output_axes, to_rows
    from optlab.testing.graphs import streaming_if_onnx

    path = streaming_if_onnx(tmp_path / "vad.onnx")
    signature = read_signature(path)
    raw = streaming_inputs(rows=6)
    axes = batch_axes(signature, raw)
    assert axes == {"x": 0, "sr": None, "state": 1}
    assert output_axes(signature)["state_out"] == 0  # what the dimensions alone say: wrong
    outputs, how = observed_output_axes(signature, raw, axes)
    assert outputs == {"logits": 0, "state_out": 1} and how["state_out"].startswith("observed")
    wrapped = batch_first(path, tmp_path / "wrapped.onnx", axes, outputs)
    logits, state = ort.InferenceSession(str(wrapped)).run(None, to_rows(raw, axes))
    want_logits, want_state = ort.InferenceSession(str(path)).run(None, raw)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-6)
    np.testing.assert_allclose(state, want_state.transpose(1, 0, 2), rtol=1e-6)


def test_declared_output_axes_win_and_unknown_names_are_refused(tmp_path):
    from optlab.models.onnx_signature import observed_output_axes
    from optlab.testing.graphs import streaming_if_onnx

    signature = read_signature(streaming_if_onnx(tmp_path / "vad.onnx"))
    raw = streaming_inputs(rows=6)
    axes = batch_axes(signature, raw, {"state_out": 1})  # an output may be declared too
    outputs, how = observed_output_axes(signature, raw, axes, {"state_out": 1})
    assert outputs["state_out"] == 1 and how["state_out"] == "declared"
    with pytest.raises(ValueError, match=r"batch_axes names \['nope'\].*its outputs \['logits'"):
        batch_axes(signature, raw, {"nope": 1})
