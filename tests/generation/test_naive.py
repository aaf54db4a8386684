"""The naive baseline (transformers' generate, one request at a time, streamed): each request's tokens
are exactly what optlab's one-at-a-time engine decodes, eos included; the server sees them as they
stream; a failing generate surfaces instead of hanging."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.demo import engine_class
from optlab.generation.engine import SequentialEngine, run_to_completion
from optlab.generation.naive import GenerateEngine
from optlab.generation.server import GenerationServer
from optlab.generation.trace import TraceSpec, poisson_trace


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)  # untied embeddings and eos_token_id 2: the greedy answers include eos
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def test_generate_one_at_a_time_equals_the_kv_cached_engine_eos_included(model):
    prompts = {"a": ([5, 6, 7, 8], 6), "b": ([11, 3, 40, 2, 9, 17, 60], 4), "c": ([1, 2], 9)}
    reference, naive = SequentialEngine(model), GenerateEngine(model)
    for request_id, (prompt, n) in prompts.items():
        reference.add(request_id, prompt, n)
        naive.add(request_id, prompt, n)
    alone, streamed = run_to_completion(reference), run_to_completion(naive)
    assert streamed == alone and 2 in alone["a"]  # eos came out and did not stop the answer
    assert engine_class("generate") is GenerateEngine


def test_the_server_sees_its_tokens_stream(model):
    trace = poisson_trace(TraceSpec(rate_per_s=20.0, requests=4, prompt_tokens=(3, 6), output_tokens=(8, 8),
                                    vocab_size=96, seed=1))
    result = GenerationServer(GenerateEngine(model)).run(trace, n_boot=20)
    frame = result.requests
    assert result.summary["completed"] == 4
    assert (frame["ttft_ms"] < frame["e2e_ms"]).all()  # streamed: the first token before the last


def test_a_failing_generate_raises_on_the_servers_thread(model):
    engine = GenerateEngine(model)
    engine.add("a", [1, 2, 3], 4)
    engine.model = None  # generate now fails inside the worker thread
    with pytest.raises(RuntimeError, match="generate failed on request 'a'"):
        run_to_completion(engine)
