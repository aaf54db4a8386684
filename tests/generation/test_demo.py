"""The notebook's non-server measurements run on the tiny stand-in models and say what is missing."""
from __future__ import annotations

import pytest

from optlab.generation import demo


def test_stand_in_models_and_measurements_have_the_promised_shape():
    pair = demo.models(smoke=True)
    assert pair.target.config.num_hidden_layers == 2 and pair.origin
    steps = demo.decode_step_ms(pair.target, batch_sizes=(1, 4), context=8, repeats=2)
    assert list(steps["batch"]) == [1, 4] and (steps["step_ms"] > 0).all()
    assert steps["ms_per_row"].iloc[1] == pytest.approx(steps["step_ms"].iloc[1] / 4)
    positions = demo.per_position_ms(pair.target, new_tokens=10, prompt_tokens=4, every=4)
    assert list(positions["position"]) == [4, 8, 12, 13]
    assert (positions[["cached_ms", "recompute_ms"]] > 0).all().all()


def test_engine_registry():
    assert demo.engine_class("sequential").__name__ == "SequentialEngine"
    assert demo.engine_class("transformers").__name__ == "TransformersEngine"
    with pytest.raises(ValueError, match="unknown engine"):
        demo.engine_class("vllm")
