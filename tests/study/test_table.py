"""results_table: a study's table as a pure function of rows, pricing and extra figures."""
import math

import pandas as pd
import pytest

from optlab.study.costs import PRICES, Price
from optlab.study.table import COLUMNS, Pricing, empty_table, merge_extra, results_table

ROWS = [
    {"candidate": "baseline", "status": "ok", "source": "local", "throughput_per_s": 1000.0, "p99_ms": 2.0},
    {"candidate": "int8", "status": "ok", "source": "local", "throughput_per_s": 4000.0, "p99_ms": 1.0},
    {"candidate": "cuda", "status": "error", "source": "local", "error": "UnsupportedRecipe: no CUDA"},
]


def test_columns_first_and_costs_from_the_price():
    df = results_table(ROWS, Pricing(0.36, utilisation=0.5))
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS) and df["candidate"].tolist() == ["baseline", "int8", "cuda"]
    # 0.36 $/h over 3600 s at 1000/s and half use: 2e-7 $ per prediction
    assert df["cost_per_1m_usd"].iloc[0] == pytest.approx(0.2) and df["cost_per_1m_usd"].iloc[1] == pytest.approx(0.05)
    assert math.isnan(df["cost_per_1m_usd"].iloc[2])  # an error row has no throughput, so no cost
    assert (df["utilisation"] == 0.5).all() and "machines_needed" not in df


def test_traffic_sizes_machines_and_the_input_rows_are_not_changed():
    rows = [dict(r) for r in ROWS]
    df = results_table(rows, Pricing("cpu-small", requests_per_s=2500))
    assert df["machines_needed"].iloc[:2].tolist() == [5, 2]
    assert rows == ROWS


def test_extra_figures_join_by_candidate_and_never_replace_a_measurement():
    extra = pd.DataFrame({"candidate": ["int8", "int8", "nobody"], "throughput_at_sla_per_s": [10.0, 30.0, 5.0],
                          "p99_ms": [99.0, 99.0, 99.0]})
    df = results_table(ROWS, Pricing(0.1), extra)
    assert len(df) == 3 and df["p99_ms"].tolist()[:2] == [2.0, 1.0]
    assert df.set_index("candidate")["throughput_at_sla_per_s"].tolist()[1] == 30.0  # the last figure wins
    assert math.isnan(df["throughput_at_sla_per_s"].iloc[0])
    with pytest.raises(ValueError, match="'candidate' column"):
        results_table(ROWS, Pricing(0.1), pd.DataFrame({"x": [1]}))


def test_a_reference_row_keeps_its_own_machines_price():
    reference = {**ROWS[1], "candidate": "int8 [H100]", "status": "reference", "reference_price_per_hour_usd": 4.0}
    df = results_table([ROWS[0], reference], Pricing(0.1))
    assert df["price_per_hour_usd"].tolist() == [0.1, 4.0]


def test_no_rows_is_an_empty_table_with_every_column():
    df = results_table([], Pricing())
    assert len(df) == 0 and list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert list(empty_table().columns) == list(COLUMNS)


def test_one_row_at_a_time_agrees_with_the_whole_table():
    """Subscribers get their rows priced by the same function: each row alone equals its line of the table."""
    pricing = Pricing(0.5, utilisation=0.7, requests_per_s=100)
    whole = results_table(ROWS, pricing)
    for i, row in enumerate(ROWS):
        alone = results_table([row], pricing).iloc[0]
        for column in ("cost_per_1k_usd", "cost_per_1m_usd", "machines_needed", "price_per_hour_usd"):
            assert alone[column] == whole[column].iloc[i] or (pd.isna(alone[column]) and pd.isna(whole[column].iloc[i]))


def test_pricing_is_checked_when_made_and_resolves_by_device():
    assert Pricing().for_device("cpu").price == PRICES["cpu-small"]
    assert Pricing().for_device("cuda:0").price == PRICES["gpu-h100"]
    assert Pricing(0.25).for_device("cuda:0").price.price_per_hour_usd == 0.25
    assert isinstance(Pricing("cpu-large").for_device("cpu").price_per_hour_usd, Price)
    with pytest.raises(ValueError, match="price_per_hour_usd=0"):
        Pricing(0)
    with pytest.raises(ValueError, match="unknown price preset"):
        Pricing("tpu")
    with pytest.raises(ValueError, match="use 0.5 for 50 percent"):
        Pricing(utilisation=50)
    with pytest.raises(ValueError, match="requests_per_s"):
        Pricing(requests_per_s=-1)


def test_merge_extra_replaces_a_candidates_figures():
    old = pd.DataFrame({"candidate": ["a", "b"], "x": [1, 2]})
    merged = merge_extra(old, pd.DataFrame({"candidate": ["b", "c"], "x": [20, 30]}))
    assert merged.set_index("candidate")["x"].to_dict() == {"a": 1, "b": 20, "c": 30}
    assert merge_extra(None, old).equals(old)
    with pytest.raises(ValueError, match="'candidate' column"):
        merge_extra(old, pd.DataFrame({"x": [1]}))
