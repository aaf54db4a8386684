"""Intel Neural Compressor through optlab: autotune judged by optlab's own evaluator and timed by
its harness, PT2E static int8 compiled with Inductor freezing, GPTQ refused where it cannot work."""
import pytest

from optlab.recipes.recipe import Quantize, UnsupportedRecipe
from optlab.techniques.registry import apply
from optlab.testing.tiny import assert_close_to_model


@pytest.fixture
def digits(tiny_digits):
    return tiny_digits


@pytest.fixture
def bids(tiny_bids):
    return tiny_bids


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
    assert_close_to_model(candidate, model, data, max_abs=0.25, min_agreement=0)


def test_gptq_on_a_non_transformer_is_unsupported_with_a_fix(digits, tmp_path):
    model, data = digits
    with pytest.raises(UnsupportedRecipe, match="algorithm='rtn'"):
        apply(Quantize("weight-only-int8", runtime="inc", algorithm="gptq", calibration_samples=16), model, data,
              workdir=tmp_path)


def test_inc_still_works_when_transformers_is_imported_after_it(tmp_path):
    """INC decides at import whether transformers is loaded; a later `import transformers` (any
    other test or notebook cell) used to break its RTN path with a NameError."""
    import subprocess
    import sys

    code = ("from optlab.testing.tiny import digits_dataset, digits_model, trained\n"
            "from optlab.recipes.recipe import Quantize\n"
            "from optlab.techniques.registry import apply\n"
            "data = digits_dataset(rows=300); model = trained(digits_model(width=16), data, epochs=1)\n"
            f"apply(Quantize('weight-only-int8', runtime='inc'), model, data, workdir={str(tmp_path)!r})\n"
            "import transformers\n"
            f"print(apply(Quantize('weight-only-int4', runtime='inc'), model, data, workdir={str(tmp_path)!r}).name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("quantize(scheme=weight-only-int4, runtime=inc)")
