"""ONNX export of a keyword-input torch model: real files with the dataset's input names and a
dynamic batch axis; when the TorchScript exporter fails, the dynamo fallback runs and the first
error is kept (a note, or both errors when the fallback fails too); Gemm -> MatMul rewrite."""
import warnings

import numpy as np
import onnx
import pytest

from optlab.models.onnx_signature import read_signature
from optlab.models.user_models import from_module
from optlab.techniques import onnx_export
from optlab.testing import ScoresOnly, feature_inputs


@pytest.fixture()
def module_and_data():
    import torch

    torch.manual_seed(0)
    module = ScoresOnly().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, data = from_module(module, feature_inputs(rows=16))
    return module, data


def test_export_writes_a_graph_with_the_inputs_and_a_dynamic_batch(module_and_data, tmp_path):
    import onnxruntime as ort
    import torch

    module, data = module_and_data
    notes = []
    exported = onnx_export.export_onnx(module, data, tmp_path / "m.onnx", notes=notes)
    signature = read_signature(exported.path)
    assert signature.input_names == ("features",) and exported.output_names == ("logits",)
    assert signature.inputs[0].shape[0] == "batch"
    assert notes == []
    x = feature_inputs(rows=5)["features"]
    out = ort.InferenceSession(str(exported.path)).run(None, {"features": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, module(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_the_first_exporters_error_is_kept_when_the_fallback_runs(module_and_data, tmp_path, monkeypatch):
    real = onnx_export._export

    def torchscript_fails(torch, wrapped, args, path, names, axes, dynamo):
        if not dynamo:
            raise RuntimeError("Unsupported operator aten::made_up\nmore detail")
        return real(torch, wrapped, args, path, names, axes, dynamo)

    monkeypatch.setattr(onnx_export, "_export", torchscript_fails)
    module, data = module_and_data
    notes = []
    exported = onnx_export.as_onnx(module, data, tmp_path, notes=notes)
    assert exported.path.exists()
    assert notes == ["ONNX export: the TorchScript exporter failed (RuntimeError: Unsupported operator "
                     "aten::made_up); exported with dynamo=True"]


def test_both_exporters_failing_names_both_errors(module_and_data, tmp_path, monkeypatch):
    def both_fail(torch, wrapped, args, path, names, axes, dynamo):
        raise ValueError("dynamo says no" if dynamo else "torchscript says no")

    monkeypatch.setattr(onnx_export, "_export", both_fail)
    module, data = module_and_data
    with pytest.raises(RuntimeError, match="TorchScript exporter raised ValueError: torchscript says no.*"
                                           "dynamo exporter then raised ValueError: dynamo says no"):
        onnx_export.export_onnx(module, data, tmp_path / "m.onnx")


def test_gemm_becomes_matmul_plus_add_with_the_same_outputs(module_and_data, tmp_path):
    import onnxruntime as ort

    module, data = module_and_data
    exported = onnx_export.export_onnx(module, data, tmp_path / "m.onnx")
    proto = onnx.load(str(exported.path))
    assert any(n.op_type == "Gemm" for n in proto.graph.node)
    rewritten = onnx_export.gemm_to_matmul(onnx.load(str(exported.path)))
    assert not any(n.op_type == "Gemm" for n in rewritten.graph.node)
    onnx.save(rewritten, str(tmp_path / "mm.onnx"))
    x = {"features": feature_inputs(rows=7)["features"]}
    before = ort.InferenceSession(str(exported.path)).run(None, x)[0]
    after = ort.InferenceSession(str(tmp_path / "mm.onnx")).run(None, x)[0]
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_a_missing_onnx_file_is_refused(tmp_path):
    from optlab.models.candidate import OnnxModel
    from optlab.recipes.recipe import UnsupportedRecipe

    with pytest.raises(UnsupportedRecipe, match="does not exist"):
        onnx_export.as_onnx(OnnxModel(tmp_path / "nope.onnx"), None, tmp_path)
