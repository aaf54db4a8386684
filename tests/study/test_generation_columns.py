"""Generation candidates are rows like any other: their figures are labelled and ranked by the one Column
table, perplexity is a lower-is-better quality, and cost per 1M output tokens comes from results_table."""
import math

import pandas as pd
import pytest

from optlab.instruments import metrics
from optlab.study import columns, costs
from optlab.study.table import Pricing, results_table

LATENCIES = [f"{kind}_p{q}_ms" for kind in ("ttft", "tpot", "itl", "e2e") for q in (50, 90, 99)]


def test_every_generation_figure_has_a_labelled_column_and_a_direction():
    for name in LATENCIES:
        found = columns.column(name)
        assert found.unit == "ms" and found.numeric and not columns.higher_is_better(name)
        low = columns.column(found.ci[0])
        assert low.unit == "ms" and "95% CI low" in low.label and low.higher_is_better is None
    assert columns.title("ttft_p99_ms") == "time to first token, p99 (ms)"
    assert columns.column("tpot_p50_ms").header == "TPOT p50 (ms)"
    for name in ("output_tokens_per_s", "goodput_per_s", "greedy_agreement", "greedy_identical_rate"):
        assert columns.higher_is_better(name), name
    for name in ("perplexity", "kv_cache_reserved_mb", "cost_per_1m_output_tokens_usd"):
        assert not columns.higher_is_better(name), name
    assert columns.column("perplexity_ci_high").label == "perplexity on the test topics, 95% CI high"
    assert columns.column("kv_cache_used_mb").format(12.345) == "12.35"
    assert columns.column("ttft_p99_ms").format(float("inf")) == "not available"
    assert "output_tokens_per_s" in columns.higher_is_better_names()


def test_perplexity_as_the_quality_metric_points_down():
    assert not columns.higher_is_better("quality", "perplexity") and columns.higher_is_better("quality", "accuracy")
    assert not metrics.higher_is_better("perplexity")
    assert metrics.worse_by("perplexity", 20.0, 23.5) == pytest.approx(3.5)  # a higher perplexity is a drop


def test_results_table_prices_output_tokens():
    rows = [{"candidate": "target fp32", "metric": "perplexity", "quality": 40.0, "output_tokens_per_s": 500.0},
            {"candidate": "target int8", "metric": "perplexity", "quality": 41.0, "output_tokens_per_s": 800.0},
            {"candidate": "broken", "status": "error", "output_tokens_per_s": None}]
    table = results_table(rows, Pricing(0.36, utilisation=0.5))
    expected = [1e6 * 0.36 / (3600 * tokens * 0.5) for tokens in (500.0, 800.0)]
    assert table["cost_per_1m_output_tokens_usd"][:2].tolist() == pytest.approx(expected)
    assert math.isnan(table["cost_per_1m_output_tokens_usd"][2])
    assert table["cost_per_1m_output_tokens_usd"][0] == pytest.approx(0.4)  # $0.36/h, 250 tokens/s used: $0.40 per 1M


def test_rows_without_tokens_get_no_token_cost_column():
    table = results_table([{"candidate": "baseline", "throughput_per_s": 100.0}], Pricing("cpu-small"))
    assert "cost_per_1m_output_tokens_usd" not in table.columns
    frame = costs.with_costs(pd.DataFrame({"output_tokens_per_s": [0.0, 1000.0]}), "cpu-small", utilisation=1.0)
    assert math.isnan(frame["cost_per_1m_output_tokens_usd"][0])
    assert frame["cost_per_1m_output_tokens_usd"][1] == pytest.approx(1e6 * 0.10 / 3.6e6)


def test_generation_rows_are_priced_and_counted_per_request():
    """A generation row's throughput is goodput (requests within the SLA): its cost is per 1M
    requests, not "predictions", in the sentence and in the table's header."""
    from optlab.study.frontier import recommend
    from optlab.testing import results_frame
    from optlab.views.report import headline_table, table_html

    rows = results_frame()
    rows = rows.assign(cost_per_1m_usd=1e6 / rows["throughput_per_s"])
    generation = rows.assign(goodput_per_s=rows["throughput_per_s"])
    assert "per 1M predictions" in recommend(rows, max_quality_drop=0.05).explanation
    sentence = recommend(generation, max_quality_drop=0.05).explanation
    assert "per 1M requests" in sentence and "predictions" not in sentence
    assert "throughput (requests/s)" in table_html(headline_table(generation))
    assert "throughput (predictions/s)" in table_html(headline_table(rows))
