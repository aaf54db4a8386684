"""The GPU bench's engines (`optlab.bench.gpu_llm_engines`), run on the CPU: they keep SequentialEngine's
schedule and return its greedy tokens with a dynamic cache and with the static cache's step (eager)."""
from __future__ import annotations

import pytest


@pytest.mark.slow  # imports transformers (about 3 s)

def test_the_device_engines_return_the_baselines_tokens_on_the_cpu():
    """The bench's engines keep SequentialEngine's schedule: the same greedy tokens, dynamic or static cache."""
    from optlab.bench.gpu_llm_engines import DeviceEngine, StaticDecoder
    from optlab.generation.demo import models
    from optlab.generation.engine import SequentialEngine, run_to_completion

    model = models(smoke=True).target
    requests = [("a", [5, 9, 2, 7], 6), ("b", [3, 1], 4), ("c", [8, 8, 8, 1, 2], 5)]

    def tokens(engine):
        for request_id, prompt, new in requests:
            engine.add(request_id, prompt, new)
        return run_to_completion(engine)

    expected = tokens(SequentialEngine(model))
    assert tokens(DeviceEngine(model, "cpu")) == expected
    assert tokens(DeviceEngine(model, "cpu", StaticDecoder(model, "cpu", max_len=16, mode=None))) == expected
