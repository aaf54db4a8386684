"""Compilation and runtimes: ONNX export with dynamic axes, ONNX Runtime graph levels and
providers, OpenVINO on the same file, torch.compile on a tiny MLP, and Chains of them."""
import numpy as np
import pytest

from optlab.models.candidate import OnnxModel
from optlab.models.runtimes import torch_predict_fn
from optlab.recipes.recipe import Chain, Compile, Quantize, UnsupportedRecipe
from optlab.techniques.registry import apply
from optlab.testing.tiny import digits_dataset, digits_model


@pytest.fixture
def digits(tiny_digits):
    return tiny_digits


def _batch(data, n):
    return {k: v[:n] for k, v in data.test.inputs.items()}


@pytest.mark.parametrize("level", ["disabled", "basic", "extended", "all"])
def test_onnxruntime_graph_levels_match_eager(level, digits, tmp_path):
    model, data = digits
    candidate = apply(Compile(graph_level=level), model, data, threads=1, workdir=tmp_path)
    assert candidate.family == "compilation" and candidate.runtime == "onnxruntime"
    assert isinstance(candidate.model, OnnxModel) and candidate.artifact_path.suffix == ".onnx"
    assert candidate.loader_options == {"threads": 1, "graph_level": level, "provider": "cpu"}
    for n in (1, 7, 64):  # dynamic batch axis
        np.testing.assert_allclose(candidate.predict(_batch(data, n)), torch_predict_fn(model)(_batch(data, n)),
                                   atol=1e-4, rtol=1e-4)


def test_export_uses_dataset_input_names_and_dynamic_batch(digits, tmp_path):
    import onnx

    from optlab.techniques.onnx_export import export_onnx

    model, data = digits
    exported = export_onnx(model, data, tmp_path / "m.onnx")
    graph = onnx.load(str(exported.path)).graph
    assert [i.name for i in graph.input] == ["pixels"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_cuda_provider_without_cuda_is_unsupported(digits, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    model, data = digits
    with pytest.raises(UnsupportedRecipe, match="CUDAExecutionProvider is not available"):
        apply(Compile(provider="cuda"), model, data, workdir=tmp_path)


def test_openvino_reads_the_same_onnx(digits, tmp_path):
    model, data = digits
    candidate = apply(Compile("openvino"), model, data, threads=1, workdir=tmp_path)
    assert candidate.runtime == "openvino" and candidate.artifact_path.suffix == ".onnx"
    for n in (1, 33):
        np.testing.assert_allclose(candidate.predict(_batch(data, n)), torch_predict_fn(model)(_batch(data, n)),
                                   atol=1e-4, rtol=1e-4)


def test_chain_static_int8_then_graph_level(digits, tmp_path):
    model, data = digits
    chain = Chain(Quantize("static-int8", runtime="onnxruntime"), Compile(graph_level="basic"))
    candidate = apply(chain, model, data, workdir=tmp_path)
    assert candidate.name == chain.name and candidate.family == "chain" and candidate.recipe == chain
    assert "static-int8" in candidate.artifact_path.name  # the quantized file, not a fresh export
    assert candidate.loader_options["graph_level"] == "basic"
    expected = torch_predict_fn(model)(_batch(data, 64))
    assert (candidate.predict(_batch(data, 64)).argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_torch_compile_rejects_onnx_model(digits, tmp_path):
    model, data = digits
    with pytest.raises(UnsupportedRecipe, match="torch.nn.Module"):
        apply(Compile("torch.compile"), OnnxModel(tmp_path / "x.onnx"), data, workdir=tmp_path)


def test_cuda_with_openvino_is_refused_before_any_work():
    with pytest.raises(ValueError, match="provider='cuda' does not apply here"):
        Compile("openvino", provider="cuda")


@pytest.mark.slow
def test_torch_compile_tiny_mlp(tmp_path):
    """Inductor on a 2-layer MLP (compiles in seconds; cached across runs by Inductor)."""
    data = digits_dataset(rows=300)
    model = digits_model(width=16, conv=False)
    candidate = apply(Compile("torch.compile"), model, data, workdir=tmp_path)
    assert candidate.runtime == "torch.compile" and candidate.meta["compile_s"] >= 0
    assert candidate.artifact_path.exists()
    np.testing.assert_allclose(candidate.predict(_batch(data, 8)), torch_predict_fn(model)(_batch(data, 8)),
                               atol=1e-4, rtol=1e-4)
