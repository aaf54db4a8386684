"""Weight-only int4 through Intel Neural Compressor on a small Llama: the weights really are 4-bit
(layers replaced, size down), the fp32 model is untouched, a process converts once, and bad requests
are refused before any work."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optlab.generation import weights
from optlab.generation.demo import models

pytest.importorskip("neural_compressor")


@pytest.fixture(scope="module")
def target():
    return models(smoke=True).target


def _windows(target, n=4):
    return weights.calibration_windows(None, target.config.vocab_size, count=n)


@pytest.mark.parametrize("name", ["int4-rtn-g32", "int4-gptq-g32", "int4-awq-g32", "int4-torchao-g32"])
def test_int4_weights_replace_the_linear_layers_and_shrink_the_model(target, name):
    before = {k: v.clone() for k, v in target.state_dict().items()}
    module, meta = weights.quantized(target, name, lambda: _windows(target))
    converted, linear = weights._layer_counts(module)
    assert converted >= linear - 1 and f"{converted} of {linear}" in meta["int4_layers"]  # the head may stay fp32
    assert weights.size_mb(module) < 0.75 * weights.size_mb(target)
    ids = torch.as_tensor(np.arange(1, 9))[None]
    with torch.inference_mode():
        fp32, int4 = target(ids).logits, module(ids).logits
    assert not torch.equal(fp32, int4) and torch.allclose(fp32, int4, atol=0.5)  # changed, not broken
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # the fp32 model is untouched
    assert weights.quantized(target, name, lambda: _windows(target))[0] is module  # converted once


def test_fp32_is_the_model_itself_and_bad_formats_are_refused(target):
    assert weights.quantized(target, "fp32")[0] is target
    with pytest.raises(ValueError, match="unknown weight format 'int3'"):
        weights.quantized(target, "int3")
    fresh = models(smoke=True).target
    with pytest.raises(ValueError, match="calibrates: pass calibration"):
        weights.quantized(fresh, "int4-gptq-g32")
    assert weights.weight_format("int4-rtn-g128").label == "INC RTN int4 g128"
    assert weights.weight_format("int4-torchao-g32").label == "torchao int4 g32"
