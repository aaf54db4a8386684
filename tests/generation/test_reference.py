"""transformers' continuous batching behind the Engine shape returns what decoding each request alone returns."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.engine import SequentialEngine, run_to_completion
from optlab.generation.reference import TransformersEngine
from optlab.generation.server import GenerationServer
from optlab.generation.trace import TraceSpec, poisson_trace


def test_transformers_engine_matches_sequential_greedy_through_the_server():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    trace = poisson_trace(TraceSpec(rate_per_s=100.0, requests=6, prompt_tokens=(3, 12), output_tokens=(2, 9)))
    engine = TransformersEngine(model, num_blocks=32)
    seen: dict[str, list[int]] = {}
    try:
        result = GenerationServer(engine).run(trace, n_boot=50,
                                             on_token=lambda rid, tok, t: seen.setdefault(rid, []).append(tok))
    finally:
        engine.close()
    reference = SequentialEngine(model)
    for r in trace:
        reference.add(r.request_id, list(r.prompt_ids), r.max_new_tokens)
    assert seen == run_to_completion(reference)
    assert result.summary["completed"] == 6
    assert result.summary["kv_cache_reserved_mb"] >= result.summary["kv_cache_used_mb"] > 0
    assert model.config._attn_implementation != "sdpa_paged"  # the caller's model is left as it was
