"""OpenVINO GenAI beside optlab's engines: `LLMPipeline` one request at a time and speculative decoding (in
continuous batching and in LLMPipeline) return, token for token, the torch model's greedy output; the
LLMPipeline engine serves a trace behind optlab's generation server; optlab's TTFT/TPOT and GenAI's own
PerfMetrics come back as finite figures for the same requests. One export of a tiny target and draft
per module; no timing is asserted (the bench judges timings)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.generation.demo import ModelPair, engine_class, make_engine
from optlab.generation.engine import SequentialEngine, run_to_completion
from optlab.generation.server import GenerationServer
from optlab.generation.trace import TraceRequest, TraceSpec, poisson_trace

pytest.importorskip("openvino_genai")
pytest.importorskip("optimum.intel")
pytest.importorskip("openvino_tokenizers")

from optlab.generation import openvino_draft, openvino_engine, openvino_metrics  # noqa: E402
from optlab.generation.openvino_pipeline import OpenVINOSingleEngine  # noqa: E402

PROMPTS = {"a": ([5, 6, 7, 8], 12), "b": ([11, 3, 40, 2, 9, 17, 60], 5), "c": ([1, 2], 9)}


def tiny_llama(seed: int, layers: int) -> LlamaForCausalLM:
    """Untied input and output embeddings: a seeded random model with tied ones repeats its last token."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def pair():
    """The target and a smaller draft, each exported once for the module (export caches per model)."""
    target, draft = tiny_llama(3, 2), tiny_llama(4, 1)
    openvino_engine.export(target), openvino_engine.export(draft)
    return target, draft


@pytest.fixture(scope="module")
def single(pair):
    """One LLMPipeline engine for the tests that only add requests (each under its own ids)."""
    engine = OpenVINOSingleEngine(pair[0])
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference(pair):
    engine = SequentialEngine(pair[0])
    for request_id, (prompt, n) in PROMPTS.items():
        engine.add(request_id, prompt, n)
    return run_to_completion(engine)


def served(engine, prefix: str = "") -> tuple[dict[str, list[int]], int]:
    """Every prompt's tokens from `engine` (request ids `prefix` + the prompt's key) and the most tokens one
    request got from a single step."""
    for request_id, (prompt, n) in PROMPTS.items():
        engine.add(prefix + request_id, prompt, n)
    outputs: dict[str, list[int]] = {}
    most = 0
    while engine.has_work():
        counts: dict[str, int] = {}
        for event in engine.step():
            outputs.setdefault(event.request_id.removeprefix(prefix), []).append(event.token)
            counts[event.request_id] = counts.get(event.request_id, 0) + 1
        most = max([most, *counts.values()])
    return outputs, most


def test_llmpipeline_and_speculative_decoding_give_the_torch_models_greedy_tokens(pair, reference, single):
    target, draft = pair
    assert len(set(reference["a"])) > 1  # the model says something, not one token repeated
    assert served(single, "greedy-") == (reference, 1)  # one token per step: a prefill or one decode step
    assert served(openvino_engine.OpenVINOSpeculativeEngine(target, draft, k=3))[0] == reference
    assert served(OpenVINOSingleEngine(target, draft=draft, k=3))[0] == reference
    # the target as its own draft: every drafted token accepted, so speculation visibly runs (k + 1 per round)
    assert served(openvino_engine.OpenVINOSpeculativeEngine(target, target, k=3)) == (reference, 4)


def test_speculative_batching_of_long_prompts_keeps_the_greedy_tokens(pair):
    """Long prompts batched at 64 tokens per step: prefilled whole (the speculative default) every request gets
    the torch model's tokens (split over steps, this GenAI's speculation changed some first tokens)."""
    target, draft = pair
    rng = np.random.default_rng(0)
    prompts = {f"long{i}": (rng.integers(1, 96, size=int(rng.integers(30, 60))).tolist(), int(rng.integers(4, 12)))
               for i in range(6)}
    engine = openvino_engine.OpenVINOSpeculativeEngine(target, draft, k=3, max_batched_tokens=64, max_batch=4)
    alone = SequentialEngine(target)
    for request_id, (prompt, n) in prompts.items():
        engine.add(request_id, prompt, n)
        alone.add(request_id, prompt, n)
    assert not engine.split_prefill and run_to_completion(engine) == run_to_completion(alone)
    with pytest.raises(ValueError, match="exceeds max_batched_tokens=64"):
        engine.add("too-long", list(range(1, 80)), 2)


def test_the_generation_server_serves_a_trace_through_llmpipeline(pair, single):
    target, _ = pair
    trace = poisson_trace(TraceSpec(rate_per_s=200.0, requests=6, prompt_tokens=(3, 8), output_tokens=(3, 6),
                                    vocab_size=96, seed=4))
    tokens: dict[str, list[int]] = {}
    result = GenerationServer(single).run(
        trace, n_boot=20, on_token=lambda rid, token, _now: tokens.setdefault(rid, []).append(token))
    assert result.summary["completed"] == len(trace) and result.summary["ttft_p50_ms"] > 0
    alone = SequentialEngine(target)
    for r in trace:
        alone.add(r.request_id, list(r.prompt_ids), r.max_new_tokens)
    assert tokens == run_to_completion(alone)
    assert engine_class("openvino-single") is OpenVINOSingleEngine


@pytest.mark.parametrize("engine_name", ["openvino-single", "openvino"])
def test_optlab_and_perf_metrics_time_the_same_requests(pair, engine_name):
    engine = make_engine(engine_name, ModelPair(pair[0], pair[1], "tiny"))  # the names the bench's rounds use
    requests = [TraceRequest(f"r{i}", 0.0, tuple(range(1 + i, 7 + i)), 5 + i) for i in range(3)]
    comparison = openvino_metrics.compare(engine, requests)
    row = comparison.row()
    for name in ("optlab_ttft_ms", "genai_ttft_ms", "ttft_ratio", "optlab_tpot_ms", "genai_tpot_ms", "tpot_ratio"):
        assert math.isfinite(row[name]) and row[name] > 0, name
    assert row["lag_ms"] is not None and math.isfinite(row["lag_ms"])
    # every event on one clock, in order: scheduled <= handed <= GenAI's start, its stamp <= received <= delivered;
    # the pieces add up to both TTFTs per request, so nothing between the two clocks is left unshown
    frame = comparison.requests
    for name in ("before_ms", "submit_ms", "lag_ms", "after_ms"):
        assert (frame[name] >= -0.01).all(), name  # GenAI rounds its own figures to the microsecond
    assert np.allclose(frame["before_ms"] + frame["engine_ttft_ms"] + frame["after_ms"], frame["ttft_ms"], atol=1e-3)
    assert np.allclose(frame["submit_ms"] + frame["genai_ttft_ms"] + frame["lag_ms"], frame["engine_ttft_ms"],
                       atol=1e-3)
    assert row["engine_ratio"] == pytest.approx(row["engine_ttft_ms"] / row["genai_ttft_ms"])
    assert comparison.requests["genai_tokens"].tolist() == [r.max_new_tokens for r in requests]
    assert comparison.requests["output_tokens"].tolist() == [r.max_new_tokens for r in requests]
    getattr(engine, "close", lambda: None)()


def test_close_stops_a_request_in_flight_and_the_stand_in_tokenizer_leaves_the_export_alone(pair):
    target, _ = pair
    engine = OpenVINOSingleEngine(target)
    engine.add("long", [1, 2, 3], 200)
    assert len(engine.step()) == 1 and engine.has_work()
    engine.close()
    assert not engine.has_work() and engine.genai_figures("long") is None  # cancelled: no complete answer
    with pytest.raises(ValueError, match="was closed"):
        engine.add("again", [1, 2], 2)
    folder = openvino_engine.export(target)
    copy = openvino_draft.tokenized(folder)
    assert not (folder / openvino_draft.TOKENIZER_FILE).exists() and (copy / openvino_draft.TOKENIZER_FILE).exists()


def test_bad_calls_are_refused_before_any_work(pair, single):
    target, draft = pair
    with pytest.raises(ValueError, match="positive integer"):
        openvino_engine.OpenVINOEngine(target, draft=draft, k=0)
    with pytest.raises(ValueError, match=r"\(draft_folder=\), not both"):
        OpenVINOSingleEngine(target, draft=draft, draft_folder="elsewhere")
    with pytest.raises(ValueError, match="attention='PA'"):
        OpenVINOSingleEngine(target, draft=draft, attention="SDPA")
    with pytest.raises(ValueError, match="unknown attention"):
        OpenVINOSingleEngine(target, attention="flash")
    with pytest.raises(ValueError, match="needs a draft"):
        openvino_engine.OpenVINOSpeculativeEngine(target)
    with pytest.raises(ValueError, match="keeps no GenAI PerfMetrics"):
        openvino_metrics.compare(SequentialEngine(target), [TraceRequest("x", 0.0, (1, 2), 2)])
    with pytest.raises(ValueError, match="at least one request"):
        openvino_metrics.compare(single, [])
    with pytest.raises(ValueError, match="token ids must lie in"):
        single.add("bad-range", [500], 2)
    single.add("bad-twice", [1, 2], 2)
    with pytest.raises(ValueError, match="already in this engine"):
        single.add("bad-twice", [1, 2], 2)
    run_to_completion(single)  # leaves the shared engine idle for the others
