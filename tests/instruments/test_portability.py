"""The drift check passes close outputs and fails loudly past the tolerance."""
from __future__ import annotations

import pandas as pd
import pytest

from optlab.instruments.portability import DriftCheck, DriftError, check_drift


def _rows(diff):
    return pd.DataFrame([
        {"candidate": "baseline", "runtime": "torch", "status": "ok", "max_abs_diff": 0.0, "agreement": 1.0},
        {"candidate": "ort", "runtime": "onnxruntime", "status": "ok", "max_abs_diff": 2e-6, "agreement": 1.0},
        {"candidate": "ov", "runtime": "openvino", "status": "ok", "max_abs_diff": diff, "agreement": 0.998},
        {"candidate": "broken", "runtime": "x", "status": "error", "max_abs_diff": None, "agreement": None},
    ])


def test_close_outputs_pass():
    out = check_drift(_rows(1e-5), DriftCheck(max_abs_diff=1e-3, min_agreement=0.99))
    assert out["drift_ok"].all() and "broken" not in set(out["candidate"])


def test_drift_past_tolerance_raises_naming_the_runtime():
    with pytest.raises(DriftError, match=r"ov on openvino: max \|diff\| 0.05"):
        check_drift(_rows(0.05), DriftCheck(max_abs_diff=1e-3, min_agreement=0.99))
    with pytest.raises(DriftError, match="agreement 0.9980"):
        check_drift(_rows(1e-5), DriftCheck(max_abs_diff=1e-3, min_agreement=0.999))


def test_a_failed_port_is_not_silently_skipped():
    with pytest.raises(DriftError, match="no measured result for \\['broken'\\]"):
        check_drift(_rows(1e-5), candidates=["ort", "broken"])


def test_bad_tolerances():
    with pytest.raises(ValueError, match="max_abs_diff"):
        DriftCheck(max_abs_diff=0)
