"""Cost formulas on hand-made numbers."""
import math

import pandas as pd
import pytest

from optlab.study import costs


def test_cost_per_prediction_formula():
    # $3.60/h at 100 predictions/s fully used: 3.60 / (3600 * 100) = $1e-5 per prediction
    e = costs.estimate(3.60, 100.0, utilisation=1.0)
    assert e.cost_per_prediction_usd == pytest.approx(1e-5)
    assert e.cost_per_1k_usd == pytest.approx(0.01)
    assert e.cost_per_1m_usd == pytest.approx(10.0)
    # half utilisation doubles the cost
    assert costs.estimate(3.60, 100.0, utilisation=0.5).cost_per_1m_usd == pytest.approx(20.0)


def test_machines_and_monthly_cost():
    e = costs.estimate(0.10, 1000.0, utilisation=0.5, requests_per_s=1200)
    # 1200 / (1000 * 0.5) = 2.4 -> 3 machines; 3 * 0.10 * 730 = 219
    assert e.machines_needed == 3
    assert e.monthly_cost_usd == pytest.approx(219.0)
    assert costs.machines_needed(1000, 1000, 1.0) == 1  # exact fit: no extra machine
    assert costs.machines_needed(0, 1000, 0.5) == 0


def test_with_costs_is_pure_and_handles_errors():
    df = pd.DataFrame({"candidate": ["a", "b", "err"], "throughput_per_s": [100.0, 400.0, None]})
    out = costs.with_costs(df, 3.60, utilisation=1.0, requests_per_s=150)
    assert "cost_per_1k_usd" not in df.columns  # input unchanged
    assert out["cost_per_1m_usd"].tolist()[:2] == pytest.approx([10.0, 2.5])
    assert math.isnan(out["cost_per_1m_usd"].iloc[2])
    assert out["machines_needed"].tolist()[:2] == [2.0, 1.0]
    assert out["monthly_cost_usd"].tolist()[:2] == pytest.approx([2 * 3.6 * 730, 3.6 * 730])
    assert out["price_per_hour_usd"].tolist() == [3.6] * 3
    per_row = costs.with_costs(df, [1.0, 2.0, 3.0], utilisation=1.0)
    assert per_row["cost_per_1k_usd"].iloc[1] == pytest.approx(1000 * 2.0 / (3600 * 400))


def test_presets_and_custom_prices():
    assert set(costs.PRICES) >= {"cpu-small", "cpu-large", "gpu-h100"}
    assert all(p.note == costs.PRICE_NOTE for p in costs.PRICES.values())
    assert "check your provider" in costs.PRICE_NOTE
    assert costs.price("gpu-h100").price_per_hour_usd > costs.price("cpu-small").price_per_hour_usd
    custom = costs.price(0.25)
    assert custom.price_per_hour_usd == 0.25 and "custom" in custom.label
    out = costs.with_costs(pd.DataFrame({"throughput_per_s": [1000.0]}), "cpu-small", utilisation=1.0)
    assert out["cost_per_1m_usd"].iloc[0] == pytest.approx(1e6 * 0.10 / 3.6e6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(price_per_hour_usd=-1, throughput_per_s=10), "positive number of US dollars"),
    (dict(price_per_hour_usd=1, throughput_per_s=0), "positive measured throughput"),
    (dict(price_per_hour_usd=1, throughput_per_s=10, utilisation=50), "use 0.5 for 50 percent"),
    (dict(price_per_hour_usd=1, throughput_per_s=10, requests_per_s=-3), "requests per second"),
])
def test_bad_input_is_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        costs.estimate(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown price preset 'tpu'.*cpu-small"):
        costs.price("tpu")


def sweep(**points):
    """sweep_json for {"b1": throughput, "b32": throughput, ...}."""
    import json

    return json.dumps([{"batch_size": int(k[1:]), "throughput_per_s": v} for k, v in points.items()])


def test_compare_uses_the_same_batch_size_or_says_why_not():
    openvino = {"throughput_batch_size": 32, "sweep_json": sweep(b1=500.0, b8=2000.0, b32=5280.0)}
    cut = {"throughput_batch_size": 1, "sweep_json": sweep(b1=2000.0, b8=4000.0)}  # batch 32 cut by the budget
    full = {"throughput_batch_size": 32, "sweep_json": sweep(b1=2000.0, b8=4000.0, b32=4000.0)}
    same = costs.compare(openvino, full)
    assert (same.batch_size, same.ratio, same.note) == (32, pytest.approx(1.32), "")
    fallback = costs.compare(openvino, cut, names=("openvino", "the baseline"))
    assert fallback.batch_size == 8 and fallback.ratio == pytest.approx(0.5)  # never 5280 / 2000 = 2.64
    assert "the largest both measured (the baseline's batch 32 point was not measured)" in fallback.note
    apart = costs.compare(openvino, {"sweep_json": sweep(b64=100.0)}, names=("openvino", "the baseline"))
    assert apart.startswith("not available: no batch size was measured for both (openvino: 1, 8, 32; the baseline: 64")
    assert costs.compare(openvino, {"sweep_json": None}).startswith("not available: the baseline has no throughput")
    assert costs.sweep_throughputs({"sweep_json": "not json"}) == {}
