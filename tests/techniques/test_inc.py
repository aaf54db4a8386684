"""Intel Neural Compressor through optlab: autotune judged by optlab's own evaluator and timed by
its harness, PT2E static int8 compiled with Inductor freezing, GPTQ refused where it cannot work."""
import numpy as np
import pytest

from optlab.models.runtimes import torch_predict_fn
from optlab.recipes.recipe import Quantize, UnsupportedRecipe
from optlab.techniques.registry import apply


@pytest.fixture
def digits(tiny_digits):
    return tiny_digits


@pytest.fixture
def bids(tiny_bids):
    return tiny_bids


def _check_close(candidate, model, data, max_abs, min_agreement):
    batch = {k: v[:128] for k, v in data.test.inputs.items()}
    expected = torch_predict_fn(model)(batch)
    got = candidate.predict(batch)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= max_abs * max(1.0, np.abs(expected).max())
    if expected.ndim == 2:
        assert (got.argmax(1) == expected.argmax(1)).mean() >= min_agreement


def test_autotune_records_trials_and_winner(digits, tmp_path):
    model, data = digits
    candidate = apply(Quantize("autotune", runtime="inc", tolerable_loss=0.05), model, data, workdir=tmp_path)
    trials = candidate.meta["tuning_trials"]
    assert trials[0]["config"] == "baseline fp32" and len(trials) >= 2
    assert all("batch256_ms" in t for t in trials)
    assert candidate.meta["inc_config"] in [t["config"] for t in trials[1:] if t["passed"]]


@pytest.mark.slow
def test_inc_static_int8_pt2e_compiled(bids, tmp_path):
    """export -> PT2E int8 -> torch.compile(freezing): tiny model so Inductor compiles quickly."""
    model, data = bids
    candidate = apply(Quantize("static-int8", runtime="inc", calibration_samples=64), model, data, workdir=tmp_path)
    assert candidate.artifact_path.suffix == ".pt2" and candidate.meta["compile_s"] >= 0
    _check_close(candidate, model, data, max_abs=0.25, min_agreement=0)


def test_gptq_on_a_non_transformer_is_unsupported_with_a_fix(digits, tmp_path):
    model, data = digits
    with pytest.raises(UnsupportedRecipe, match="algorithm='rtn'"):
        apply(Quantize("weight-only-int8", runtime="inc", algorithm="gptq", calibration_samples=16), model, data,
              workdir=tmp_path)
