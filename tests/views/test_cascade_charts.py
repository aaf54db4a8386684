"""The cascade's ECDF reads the sweep's samples and draws three curves (no model needed)."""
import numpy as np
import pandas as pd
import pytest

from optlab.views.cascade_charts import cascade_latency_chart, cascade_samples


def _samples():
    rng = np.random.default_rng(0)
    parts = [pd.DataFrame({"model": "cheap alone", "threshold": None, "latency_ms": rng.gamma(4, 0.01, 50)}),
             pd.DataFrame({"model": "expensive alone", "threshold": None, "latency_ms": rng.gamma(4, 0.1, 50)})]
    for threshold in (0.5, 0.9):
        parts.append(pd.DataFrame({"model": "cascade", "threshold": threshold,
                                   "latency_ms": rng.gamma(4, 0.01 if threshold == 0.5 else 0.05, 50)}))
    return pd.concat(parts, ignore_index=True)


def test_the_ecdf_holds_both_models_alone_and_the_nearest_swept_threshold():
    data = cascade_samples(_samples(), 0.88)
    assert sorted(set(data["candidate"])) == ["cascade, threshold 0.9", "cheap alone", "expensive alone"]
    assert len(data) == 150
    many = pd.DataFrame({"model": "cheap alone", "threshold": None, "latency_ms": np.arange(5000.0)})
    thinned = cascade_samples(pd.concat([_samples(), many], ignore_index=True), 0.5)
    cheap = thinned[thinned["candidate"] == "cheap alone"]["latency_ms"]
    assert len(cheap) == 400 and cheap.min() == 0 and cheap.max() == 4999  # the ECDF's ends are kept
    spec = cascade_latency_chart(_samples(), 0.88).to_dict()
    assert spec["mark"]["type"] == "line" and "share" in str(spec["encoding"]["y"])


def test_samples_without_a_cascade_are_refused():
    with pytest.raises(ValueError, match="threshold_sweep"):
        cascade_samples(_samples().drop(columns=["threshold"]), 0.9)
    with pytest.raises(ValueError, match="no cascade"):
        cascade_samples(_samples().query("model != 'cascade'"), 0.9)
