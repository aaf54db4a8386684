"""The runtimes a candidate is loaded into: ONNX Runtime sessions that refuse what they cannot
do, torch predictors that hand back float32 numpy, and torch.compile that leaves the process's
Inductor settings as they were."""
import numpy as np
import pytest
import torch

from optlab.models import runtimes
from optlab.testing import TinyCNN, cnn_inputs, export


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    model = TinyCNN().eval()
    path = export(model, cnn_inputs(4), tmp_path_factory.mktemp("rt") / "cnn.onnx")
    return model, path


def test_ort_session_runs_the_graph_and_matches_torch(cnn_onnx):
    model, path = cnn_onnx
    batch = cnn_inputs(5)
    predict = runtimes.ort_predict_fn(runtimes.ort_session(path, threads=1, graph_level="basic"))
    got = predict(batch)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch["image"])).numpy()
    assert got.dtype == np.float32 and got.shape == (5, 10)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_provider_that_is_not_installed_is_refused_with_the_fix(cnn_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider; the refusal is for machines without it")
    with pytest.raises(RuntimeError, match="install onnxruntime-gpu or use provider=.cpu."):
        runtimes.ort_session(cnn_onnx[1], provider="cuda")


def test_torch_predictor_casts_back_to_float32():
    model = torch.nn.Linear(3, 2).eval()
    batch = {"x": np.ones((4, 3), dtype=np.float32)}
    half = runtimes.torch_predict_fn(model.to(torch.bfloat16), input_dtype="bfloat16", positional=("x",))(batch)
    assert half.dtype == np.float32 and half.shape == (4, 2)


@pytest.mark.slow
def test_compile_module_keeps_the_global_inductor_flags():
    import torch._inductor.config as inductor_config

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    before = inductor_config.freezing
    x = torch.randn(4, 8)
    with torch.no_grad():
        got = runtimes.compile_module(model, freezing=not before, dynamic=False)(x)
        expected = model(x)
    assert inductor_config.freezing == before
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
