"""Scale-to-zero: the first request after a fresh start, beside the steady-state p99."""
from __future__ import annotations

import numpy as np
import pytest

from optlab.models.candidate import Candidate
from optlab.models.user_models import onnx_candidate
from optlab.serving.scale_to_zero import first_request
from optlab.testing import ScoresOnly, export


def test_first_request_after_a_fresh_start_is_slower_than_steady_p99(tmp_path):
    example = {"features": np.zeros((2, 6), np.float32)}
    candidate = onnx_candidate(export(ScoresOnly(), example, tmp_path / "m.onnx"), threads=1)
    requests = [{"features": np.random.default_rng(i).normal(size=(1, 6)).astype(np.float32)} for i in range(20)]
    row = first_request(candidate, requests, repeats=1, steady_rate_per_s=400, steady_requests=700)
    assert row["first_request_ms"] >= row["load_ms"] + row["first_call_ms"]
    assert row["first_request_ms"] > row["steady_p99_ms"] and row["cold_over_steady_p99"] > 1


def test_a_candidate_without_a_loader_is_refused():
    with pytest.raises(ValueError, match="no loader"):
        first_request(Candidate("inline", lambda b: b["x"]), [{"x": np.zeros((1, 1))}])
