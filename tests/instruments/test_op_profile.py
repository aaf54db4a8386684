"""optlab.instruments.op_profile: operator times from ONNX Runtime's profiler, matrix-product share, Amdahl."""
from __future__ import annotations

import numpy as np
import pytest

from optlab.instruments import op_profile
from optlab.testing.graphs import constant_weight_mlp_inputs, constant_weight_mlp_onnx


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return constant_weight_mlp_onnx(tmp_path_factory.mktemp("op-profile") / "mlp.onnx", features=64, hidden=256)


def test_operator_times_sum_the_profiled_passes_without_the_warm_up(mlp):
    batches = [constant_weight_mlp_inputs(rows=r, features=64, seed=r) for r in (8, 32, 64)]
    frame = op_profile.operator_times(mlp, batches, threads=1, runs=2)
    assert list(frame.columns) == ["op_type", "calls_per_pass", "ms_per_pass", "share", "matmul"]
    assert frame["share"].sum() == pytest.approx(1.0)
    assert (frame["ms_per_pass"] > 0).all() and frame["ms_per_pass"].is_monotonic_decreasing
    # every node runs once per batch: a warm-up pass left in would make these 1.5 x 3 per node
    assert np.allclose(frame["calls_per_pass"] % len(batches), 0)
    assert frame["matmul"].any(), frame  # the MLP's products (MatMul, or Gemm once fused) are found
    assert 0.0 < op_profile.matmul_share(frame) <= 1.0
    assert "%" in op_profile.describe(frame)


def test_amdahl_bound_and_bad_input(mlp):
    assert op_profile.amdahl_bound(0.5, 2.0) == pytest.approx(1 / 0.75)
    assert op_profile.amdahl_bound(0.0, 10.0) == 1.0
    assert op_profile.amdahl_bound(1.0, 4.0) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="share"):
        op_profile.amdahl_bound(1.5, 2.0)
    with pytest.raises(ValueError, match="at least one batch"):
        op_profile.operator_times(mlp, [])
    with pytest.raises(ValueError, match="runs=0"):
        op_profile.operator_times(mlp, [constant_weight_mlp_inputs(features=64)], runs=0)


def test_by_candidate_sets_files_side_by_side_against_the_first(mlp, tmp_path):
    from optlab.testing.graphs import constant_weight_mlp_onnx

    wider = constant_weight_mlp_onnx(tmp_path / "wider.onnx", features=64, hidden=1024)
    batches = [constant_weight_mlp_inputs(rows=64, features=64)]
    table = op_profile.by_candidate({"small": mlp, "wider": wider}, batches, threads=1, runs=2)
    assert list(table["candidate"]) == ["small", "wider"]
    first = table.iloc[0]
    assert first["total_x"] == first["matmul_x"] == 1.0
    assert (table["total_ms_per_pass"] == table["matmul_ms_per_pass"] + table["other_ms_per_pass"]).all()
    assert table["matmul_share"].between(0, 1).all()
