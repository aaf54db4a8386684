"""Generation candidates as rows: exact engines agree token for token and keep the target's perplexity,
the draft alone is a real trade-off point, the rows price and chart like any other."""
from __future__ import annotations

import math

import pytest

from optlab.generation import candidates
from optlab.generation.candidates import GenerationCandidate, token_agreement
from optlab.generation.demo import ModelPair, models
from optlab.generation.server import GoodputSearch
from optlab.generation.trace import TraceSpec, poisson_trace
from optlab.instruments.generation import Sla


def _pair() -> ModelPair:
    """The smoke target and a draft with its own output layer: seeded random models with tied embeddings
    both just repeat the last token, so their greedy outputs would agree by accident."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target = models(smoke=True).target
    torch.manual_seed(5)
    config = LlamaConfig(vocab_size=target.config.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    return ModelPair(target, LlamaForCausalLM(config).eval(), "test models")


@pytest.fixture(scope="module")
def measured():
    pair = _pair()
    trace = poisson_trace(TraceSpec(rate_per_s=20.0, requests=8, prompt_tokens=(4, 10), output_tokens=(3, 8),
                                    vocab_size=pair.target.config.vocab_size, seed=2))
    search = GoodputSearch(sla=Sla(ttft_ms=2000.0, tpot_ms=500.0), min_requests=len(trace), start_per_s=4.0,
                           rel_tol=0.5, max_probes=2, min_per_s=0.5)
    chosen = (*candidates.WORKSHOP, GenerationCandidate("static"),
              GenerationCandidate("continuous", weights="int4-rtn-g32"))
    return candidates.measure(pair, trace, chosen, search, agreement_requests=3).set_index("candidate")


def test_exact_engines_agree_with_the_baseline_and_keep_its_perplexity(measured):
    for name in ("baseline", "continuous", "static"):
        row = measured.loc[name]
        assert row["status"] == "ok", row["error"]
        assert row["agreement"] == 1.0
        assert row["quality_drop"] == 0.0 and row["metric"] == "perplexity"
    assert measured.loc["baseline", "family"] == "baseline" and measured.loc["continuous", "family"] == "generation"


def test_the_draft_alone_is_scored_on_its_own_perplexity_and_agreement(measured):
    draft = measured.loc["continuous(draft model)"]
    assert draft["status"] == "ok", draft["error"]
    assert draft["perplexity"] != measured.loc["baseline", "perplexity"]
    assert draft["quality_drop"] == pytest.approx(draft["perplexity"] - draft["baseline_quality"])
    assert 0.0 <= draft["agreement"] < 1.0  # another model's greedy tokens differ somewhere


def test_an_int4_candidate_is_scored_on_its_own_weights_and_is_smaller(measured):
    row, base = measured.loc["continuous(INC RTN int4 g32)"], measured.loc["baseline"]
    assert row["status"] == "ok", row["error"]
    assert row["family"] == "quantization" and row["weights"] == "INC RTN int4 g32"
    assert row["size_mb"] < 0.75 * base["size_mb"]  # the smoke model's fp32 embedding is a large share
    assert row["perplexity"] != base["perplexity"]  # 4-bit weights change the numbers: measured, not assumed
    assert row["quality_drop"] == pytest.approx(row["perplexity"] - base["perplexity"])
    assert "linear layers" in row["notes"] and row["goodput_per_s"] > 0
    assert '"weights": "int4-rtn-g32"' in row["recipe_json"]


def test_rows_carry_goodput_and_price_per_token_through_the_costs_owner(measured):
    from optlab.study.costs import with_costs

    ok = measured[measured["status"] == "ok"]
    assert (ok["goodput_per_s"] > 0).all() and (ok["throughput_per_s"] == ok["goodput_per_s"]).all()
    priced = with_costs(ok.reset_index(), 0.10)
    assert (priced["cost_per_1m_output_tokens_usd"] > 0).all()
    assert all(math.isfinite(v) for v in priced["cost_per_1m_usd"])
    assert ok["quality_note"].str.contains("seeded random tokens").all()  # stand-ins say what they were scored on


def test_the_explorer_offers_generation_axes_and_draws_the_rows(measured):
    from optlab.views.widgets import TradeoffExplorer

    explorer = TradeoffExplorer(measured.reset_index(), x="output_tokens_per_s", max_p99_ms=None,
                                max_quality_drop=1e6)
    try:
        offered = [value for _, value in explorer.x_axis.options]
        assert {"ttft_p99_ms", "output_tokens_per_s", "goodput_per_s"} <= set(offered)
        assert explorer.x == "output_tokens_per_s"
        assert set(explorer.chart_data["candidate"]) == set(measured.index)
        explorer.x_axis.value = "ttft_p99_ms"
        assert explorer.x == "ttft_p99_ms"
    finally:
        explorer.close()


def test_a_missing_engine_is_an_error_row_and_bad_candidates_are_refused(monkeypatch):
    from optlab.generation import demo

    monkeypatch.setitem(demo.ENGINES, "absent", ("optlab.generation.not_in_this_checkout", "Engine"))
    pair = models(smoke=True)
    trace = poisson_trace(TraceSpec(rate_per_s=20.0, requests=2, prompt_tokens=(3, 4), output_tokens=(2, 3),
                                    vocab_size=pair.target.config.vocab_size))
    rows = candidates.measure(pair, trace, [GenerationCandidate("absent")], GoodputSearch(min_requests=1))
    assert rows.loc[0, "status"] == "error" and "not in this checkout" in rows.loc[0, "error"]
    with pytest.raises(ValueError, match="model must be one of"):
        GenerationCandidate("continuous", model="teacher")
    with pytest.raises(ValueError, match="speculative"):
        GenerationCandidate("speculative", model="draft")
    assert token_agreement({"a": [1, 2, 3, 4]}, {"a": [1, 2, 9]}) == 0.5
    assert token_agreement({}, {}) is None


def test_the_goodput_chart_labels_bars_by_candidate(measured):
    from optlab.views.generation_charts import goodput

    spec = goodput(measured.reset_index()).to_dict()
    drawn = next(iter(spec["datasets"].values()))
    assert {row["candidate"] for row in drawn} == set(measured.index[measured["goodput_per_s"].notna()])
    assert spec["encoding"]["y"]["field"] == "candidate"


@pytest.fixture(scope="module")
def on_openvino():
    pytest.importorskip("openvino_genai")
    pair = _pair()
    trace = poisson_trace(TraceSpec(rate_per_s=20.0, requests=4, prompt_tokens=(4, 8), output_tokens=(3, 5),
                                    vocab_size=pair.target.config.vocab_size, seed=3))
    search = GoodputSearch(sla=Sla(ttft_ms=2000.0, tpot_ms=500.0), min_requests=len(trace), start_per_s=4.0,
                           rel_tol=0.5, max_probes=1, min_per_s=0.5)
    chosen = (candidates.BASELINE, candidates.OPENVINO[0], candidates.OPENVINO[2])
    return candidates.measure(pair, trace, chosen, search, agreement_requests=2).set_index("candidate")


def test_openvino_rows_are_scored_on_the_ir_they_serve(on_openvino):
    base, fp32, int4 = (on_openvino.loc[name] for name in ("baseline", "openvino", "openvino(NNCF int4 g16)"))
    for row in (fp32, int4):
        assert row["status"] == "ok", row["error"]
        assert row["runtime"] == "openvino"
    assert fp32["family"] == "generation" and int4["family"] == "quantization"
    assert fp32["perplexity"] == pytest.approx(base["perplexity"], rel=1e-3)  # the fp32 IR computes the same model
    assert int4["weights"] == "NNCF int4 g16 asym" and int4["notes"].startswith("int4 on ")  # read back from the IR
    assert int4["size_mb"] < 0.6 * fp32["size_mb"]
    assert fp32["agreement"] == 1.0 and "compiled kernels" in fp32["lesson"]
    assert "quantization" in int4["lesson"]


def test_an_openvino_candidate_takes_its_weights_as_an_option():
    with pytest.raises(ValueError, match="options=\\(\\('weights'"):
        GenerationCandidate("openvino", weights="int4-rtn-g32")
    assert GenerationCandidate("openvino", options=(("weights", "int8"),)).served == ("target", "openvino:int8")
