"""Quantization techniques on tiny real models (sklearn digits CNN, a click-through MLP with
embedding tables): outputs close to the baseline, artifacts written and smaller, the caller's
model untouched, fresh-process loaders, and UnsupportedRecipe where a combination cannot work."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from optlab.models.candidate import OnnxModel
from optlab.recipes.recipe import Quantize, UnsupportedRecipe
from optlab.techniques.registry import apply
from optlab.testing.tiny import assert_close_to_model

ORT = dict(runtime="onnxruntime")


@pytest.fixture
def digits(tiny_digits):
    return tiny_digits


@pytest.fixture
def bids(tiny_bids):
    return tiny_bids


def _baseline_size(model, tmp_path):
    import torch

    path = tmp_path / "fp32.pt"
    torch.save(model, path)
    return path.stat().st_size


# (recipe, max abs diff relative to the logit scale, min top-1 agreement)
DIGITS_CASES = [
    (Quantize("bf16"), 0.05, 0.95),
    (Quantize("bf16", autocast=True), 0.05, 0.95),
    (Quantize("fp16"), 0.01, 0.98),
    (Quantize("dynamic-int8"), 0.05, 0.95),
    (Quantize("dynamic-int8", **ORT), 0.05, 0.95),
    (Quantize("static-int8", **ORT), 0.1, 0.9),
    (Quantize("static-int8", calibration="entropy", per_channel=True, calibration_samples=128, **ORT), 0.2, 0.85),
    (Quantize("static-int8", calibration="percentile", **ORT), 0.2, 0.85),
    (Quantize("fp16", **ORT), 0.01, 0.98),
    (Quantize("weight-only-int8", runtime="inc"), 0.02, 0.97),
    (Quantize("weight-only-int4", runtime="inc"), 0.2, 0.85),
    (Quantize("autotune", runtime="inc", tolerable_loss=0.05), 0.2, 0.85),
]


@pytest.mark.parametrize("recipe, max_abs, min_agreement", DIGITS_CASES, ids=[c[0].name for c in DIGITS_CASES])
def test_quantize_digits_close_to_baseline(recipe, max_abs, min_agreement, digits, tmp_path):
    model, data = digits
    before = copy.deepcopy(model.state_dict())
    candidate = apply(recipe, model, data, threads=1, workdir=tmp_path)
    assert candidate.name == recipe.name and candidate.recipe == recipe
    assert candidate.family == "quantization" and candidate.device == "cpu"
    assert candidate.runtime == {"torch": "torch", "onnxruntime": "onnxruntime", "inc": "inc"}[recipe.runtime]
    assert candidate.artifact_path.exists() and str(candidate.artifact_path).startswith(str(tmp_path))
    assert candidate.loader and candidate.loader.startswith("optlab.models.runtimes:")
    assert_close_to_model(candidate, model, data, max_abs, min_agreement)
    if recipe.runtime == "onnxruntime":
        assert isinstance(candidate.model, OnnxModel) and candidate.model.input_names == ("pixels",)
    if recipe.scheme in ("dynamic-int8", "static-int8", "weight-only-int4") or (
            recipe.scheme in ("bf16", "fp16") and not recipe.autocast):
        assert candidate.size_bytes < 0.6 * _baseline_size(model, tmp_path)
    after = model.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before), "caller's model changed"


@pytest.mark.parametrize("recipe", [Quantize("dynamic-int8"), Quantize("dynamic-int8", **ORT),
                                    Quantize("static-int8", **ORT)], ids=lambda r: r.name)
def test_int8_quantizes_embedding_tables(recipe, bids, tmp_path):
    model, data = bids
    candidate = apply(recipe, model, data, workdir=tmp_path)
    # per-row scales cost more on this tiny 16-wide table than on the reference model
    assert candidate.size_bytes <= 0.4 * _baseline_size(model, tmp_path)
    assert_close_to_model(candidate, model, data, max_abs=0.1, min_agreement=0)


def test_skewed_calibration_uses_one_class(digits, tmp_path):
    from optlab.data.calibration import calibration_rows

    model, data = digits
    skewed = calibration_rows(data, 64, "skewed")
    assert len(np.unique(skewed.labels)) == 1
    assert len(np.unique(calibration_rows(data, 64, "representative").labels)) > 3
    candidate = apply(Quantize("static-int8", calibration_data="skewed", calibration_samples=64, **ORT), model,
                      data, workdir=tmp_path)
    assert candidate.meta["calibration_data"] == "skewed"


def test_torch_loader_rebuilds_torchao_module(bids, tmp_path):
    from optlab.models.runtimes import load_torch

    model, data = bids
    candidate = apply(Quantize("dynamic-int8"), model, data, workdir=tmp_path)
    predict = load_torch(candidate.artifact_path, **candidate.loader_options)
    batch = {k: v[:16] for k, v in data.test.inputs.items()}
    np.testing.assert_allclose(predict(batch), candidate.predict(batch), atol=1e-6)


def test_ort_loader_runs_in_a_fresh_process_without_torch(bids, tmp_path):
    model, data = bids
    candidate = apply(Quantize("dynamic-int8", **ORT), model, data, threads=1, workdir=tmp_path)
    batch = {k: v[:8] for k, v in data.test.inputs.items()}
    np.savez(tmp_path / "batch.npz", **batch)
    module, function = candidate.loader.split(":")
    code = (
        "import importlib, json, sys, numpy as np\n"
        f"fn = getattr(importlib.import_module({module!r}), {function!r})\n"
        f"predict = fn({str(candidate.artifact_path)!r}, **json.loads({json.dumps(candidate.loader_options)!r}))\n"
        f"batch = dict(np.load({str(tmp_path / 'batch.npz')!r}))\n"
        "out = predict(batch)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'out': out.tolist()}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    np.testing.assert_allclose(report["out"], candidate.predict(batch), atol=1e-5)


def test_torch_recipe_rejects_onnx_model(digits, tmp_path):
    model, data = digits
    onnx_candidate = apply(Quantize("fp16", **ORT), model, data, workdir=tmp_path)
    for recipe in (Quantize("dynamic-int8"), Quantize("weight-only-int8", runtime="inc")):
        with pytest.raises(UnsupportedRecipe, match="ONNX model"):
            apply(recipe, onnx_candidate.model, data, workdir=tmp_path)


def test_ort_quantize_consumes_an_onnx_model(digits, tmp_path):
    model, data = digits
    exported = apply(Quantize("fp16", **ORT), model, data, workdir=tmp_path)
    source = OnnxModel(exported.meta["source_onnx"], ("pixels",), ("logits",))
    candidate = apply(Quantize("dynamic-int8", **ORT), source, data, workdir=tmp_path)
    assert candidate.meta["source_onnx"] == str(source.path)
    assert_close_to_model(candidate, model, data, 0.05, 0.95)


def test_tiny_models_start_from_the_same_weights_whatever_ran_before():
    """The session's tiny digits/bids models are built by whichever test asks first: their initial
    weights must not depend on how many random draws earlier tests made (nor consume any)."""
    import torch

    from optlab.testing.tiny import bids_model, digits_model

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = digits_model(width=8).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left as it was
    torch.rand(17)  # an earlier test's draws
    second = digits_model(width=8).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.rand(5)
    assert all(torch.equal(a, b) for a, b in zip(bids_model(vocab=(20, 5), numeric=2, dim=4, width=8).state_dict()
                                                 .values(), bids_model(vocab=(20, 5), numeric=2, dim=4,
                                                                       width=8).state_dict().values(), strict=True))
