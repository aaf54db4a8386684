"""OpenVINO GenAI's continuous-batching pipeline as an engine: exported offline from a small Llama, it
returns, for every request served together, exactly the tokens optlab's one-at-a-time engine returns;
it serves through the generation server; NNCF int4 weights shrink the IR."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.demo import engine_class
from optlab.generation.engine import SequentialEngine, run_to_completion
from optlab.generation.server import GenerationServer
from optlab.generation.trace import TraceSpec, poisson_trace

pytest.importorskip("openvino_genai")
pytest.importorskip("optimum.intel")

from optlab.generation import openvino_engine  # noqa: E402


@pytest.fixture(scope="module")
def model():
    """Untied input and output embeddings: a seeded random model with tied ones repeats its last token."""
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


PROMPTS = {"a": ([5, 6, 7, 8], 6), "b": ([11, 3, 40, 2, 9, 17, 60], 4), "c": ([1, 2], 9)}


def test_served_together_each_request_gets_what_decoding_it_alone_gives(model):
    reference = SequentialEngine(model)
    engine = openvino_engine.OpenVINOEngine(model, max_batch=4)
    for request_id, (prompt, n) in PROMPTS.items():
        reference.add(request_id, prompt, n)
        engine.add(request_id, prompt, n)
    alone, together = run_to_completion(reference), run_to_completion(engine)
    assert together == alone
    assert len(set(alone["c"])) > 1  # the model says something, not one token repeated
    assert engine_class("openvino") is openvino_engine.OpenVINOEngine


def test_the_generation_server_measures_it_like_any_engine(model):
    trace = poisson_trace(TraceSpec(rate_per_s=50.0, requests=6, prompt_tokens=(3, 8), output_tokens=(3, 6),
                                    vocab_size=96, seed=4))
    result = GenerationServer(openvino_engine.OpenVINOEngine(model)).run(trace, n_boot=20)
    assert result.summary["completed"] == len(trace) and result.summary["ttft_p50_ms"] > 0
    assert result.requests["output_tokens"].tolist() == [r.max_new_tokens for r in trace]


def test_int4_weights_shrink_the_ir_and_bad_calls_are_refused(model):
    fp32, int4 = openvino_engine.export(model), openvino_engine.export(model, "int4")
    assert openvino_engine.ir_mb(int4) < 0.5 * openvino_engine.ir_mb(fp32)
    assert openvino_engine.export(model) == fp32  # exported once per model and weights
    with pytest.raises(ValueError, match="unknown weights 'int3'"):
        openvino_engine.export(model, "int3")
    with pytest.raises(ValueError, match="not both"):
        openvino_engine.OpenVINOEngine()
    engine = openvino_engine.OpenVINOEngine(model)
    with pytest.raises(ValueError, match="token ids must lie in"):
        engine.add("x", [500], 2)
