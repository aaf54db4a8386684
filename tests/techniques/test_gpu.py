"""GPU candidates (OnDevice): the recipe validates here; on a CPU-only machine applying it is
refused with "needs CUDA"; on a GPU every precision / graphs / torchao / 2:4 variant predicts
what fp32 eager predicts, within its precision, and leaves torch's global flags as it found them."""
import numpy as np
import pytest
import torch

from optlab.recipes.recipe import Compile, OnDevice, UnsupportedRecipe, from_json, parse
from optlab.techniques.gpu import matmul_precision
from optlab.techniques.registry import apply, handler
from optlab.testing.tiny import bids_dataset, bids_model, trained

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")


def test_recipe_names_round_trip_and_defaults():
    recipe = OnDevice(precision="bf16", graphs="compile-cudagraphs")
    assert recipe.name == "ondevice(device=cuda, precision=bf16, graphs=compile-cudagraphs)"
    assert parse(recipe.name) == recipe and from_json(recipe.to_json()) == recipe
    assert parse("ondevice(precision=bf16, sparsity=2:4)") == OnDevice(precision="bf16", sparsity="2:4")
    assert OnDevice().name == "ondevice(device=cuda, precision=fp32)"


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "cpu"}, "not a CUDA device"),
    ({"device": "cuda:x"}, "not a CUDA device"),
    ({"precision": "int4"}, "precision='int4' is not allowed"),
    ({"graphs": "always"}, "graphs='always' is not allowed"),
    ({"autocast": True}, "does not apply here"),
    ({"precision": "tf32", "autocast": True}, "does not apply here"),
    ({"quantize": "float8"}, "needs precision='bf16'"),
    ({"quantize": "int8", "precision": "fp16"}, "needs precision 'fp32' or 'bf16'"),
    ({"sparsity": "2:4"}, "needs precision 'bf16' or 'fp16'"),
    ({"sparsity": "2:4", "precision": "bf16", "autocast": True}, "without autocast"),
    ({"sparsity": "2:4", "precision": "bf16", "quantize": "int8"}, "not both"),
])
def test_recipe_refuses_what_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnDevice(**kwargs)


def test_registered_for_its_recipe():
    from optlab.techniques.gpu import apply_on_device

    assert handler(OnDevice) is apply_on_device


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_recipe_is_refused_with_the_reason():
    with pytest.raises(UnsupportedRecipe, match=r"ondevice\(device=cuda, precision=bf16\): needs CUDA: torch .* "
                                                r"sees no CUDA device"):
        apply(OnDevice(precision="bf16"), bids_model(), None)


def test_onnxruntime_cuda_provider_is_skipped_with_its_reason_when_not_installed(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: nothing to refuse")
    with pytest.raises(UnsupportedRecipe, match="CUDAExecutionProvider is not available here .* onnxruntime-gpu"):
        apply(Compile(provider="cuda"), bids_model(), bids_dataset(rows=200), workdir=tmp_path)


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_matmul_precision_is_set_inside_and_restored(precision):
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    with matmul_precision(precision):
        assert torch.get_float32_matmul_precision() == ("high" if precision == "tf32" else "highest")
        assert torch.backends.cudnn.allow_tf32 is (precision == "tf32")
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


# --- on a GPU ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bids():
    data = bids_dataset(rows=4000)
    return trained(bids_model(), data, epochs=1), data


def _fresh_batch(data, n, seed):
    """Random rows of the test split (fresh inputs per check: stale static buffers would show)."""
    rows = np.random.default_rng(seed).integers(0, len(data.test.labels), n)
    return {k: v[rows] for k, v in data.test.inputs.items()}


def _reference(model, batch):
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).double().numpy()


def _rel_error(out, ref):
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


TOLERANCE = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 3e-2, "fp16": 5e-3}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision, autocast, graphs", [
    ("fp32", False, "none"), ("tf32", False, "none"), ("bf16", False, "none"), ("bf16", True, "none"),
    ("fp16", False, "none"), ("fp16", True, "none"), ("fp32", False, "manual"), ("bf16", False, "manual"),
    ("bf16", False, "compile"), ("bf16", False, "compile-cudagraphs"),
])
def test_gpu_candidates_match_fp32_within_their_precision(bids, precision, autocast, graphs):
    model, data = bids
    flags = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    candidate = apply(OnDevice(precision=precision, autocast=autocast, graphs=graphs), model, data)
    assert candidate.device == "cuda" and candidate.meta["gpu"]
    for seed, n in ((1, 1), (2, 64), (3, 64), (4, 1)):  # repeated shapes replay graphs on new inputs
        batch = _fresh_batch(data, n, seed)
        out = candidate.predict(batch)
        assert out.shape == (n,) and np.isfinite(out).all()
        assert _rel_error(out, _reference(model, batch)) < TOLERANCE[precision]
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == flags
    if graphs == "manual":
        assert len(candidate.meta["device_forward"].graphs) == 3  # n=8 at build, then 1 and 64


@pytest.mark.gpu
@needs_cuda
def test_device_forward_takes_resident_inputs(bids):
    model, data = bids
    candidate = apply(OnDevice(precision="bf16"), model, data)
    batch = _fresh_batch(data, 32, 5)
    tensors = candidate.meta["device_inputs"](batch)
    assert all(t.is_cuda for t in tensors.values()) and tensors["numeric"].dtype == torch.bfloat16
    out = candidate.meta["device_forward"](tensors)
    np.testing.assert_allclose(out.float().cpu().numpy(), candidate.predict(batch), rtol=1e-6)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("scheme", ["int8", "float8"])
def test_torchao_dynamic_quantization_on_gpu(bids, scheme):
    pytest.importorskip("torchao", reason="torchao is not installed here")
    model, data = bids
    candidate = apply(OnDevice(precision="bf16", quantize=scheme), model, data)
    assert candidate.family == "quantization" and candidate.meta["quantized_layers"]
    batch = _fresh_batch(data, 256, 7)
    assert _rel_error(candidate.predict(batch), _reference(model, batch)) < 0.1


@pytest.mark.gpu
@needs_cuda
def test_two_four_sparsity_prunes_half_of_each_group_and_runs(bids):
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 semi-structured sparsity needs compute capability >= 8.0")
    model, data = bids
    candidate = apply(OnDevice(precision="bf16", sparsity="2:4"), model, data)
    assert candidate.family == "pruning" and candidate.meta["sparse_layers"]
    for name in candidate.meta["sparse_layers"]:
        weight = candidate.model.get_submodule(name).weight
        dense = weight.to_dense().reshape(-1, 4)
        assert ((dense != 0).sum(dim=1) <= 2).all()
    batch = _fresh_batch(data, 128, 8)
    out = candidate.predict(batch)
    assert out.shape == (128,) and np.isfinite(out).all()
