"""`optlab serve-bench`: an analyst's ONNX model and inputs in, a table, CSVs, charts and a report out."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optlab.cli.main import main
from optlab.testing import ScoresOnly, export


@pytest.fixture()
def onnx_model(tmp_path):
    example = {"features": np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)}
    path = export(ScoresOnly(), example, tmp_path / "scores.onnx")
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, features=np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32))
    return path, inputs


def test_serve_bench_writes_the_table_charts_and_report(onnx_model, tmp_path, capsys):
    model, inputs = onnx_model
    out = tmp_path / "out"
    code = main(["serve-bench", "--model", str(model), "--inputs", str(inputs), "--max-p99-ms", "50",
                 "--smoke", "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "serve_bench.csv")
    assert set(table.policy) == {"none", "dynamic(max_batch=64, max_wait_ms=2)"}
    assert (out / "latency_vs_load.html").is_file() and "<iframe" in (out / "report.html").read_text()
    assert len(pd.read_csv(out / "latency_vs_load.csv")) >= 2
    assert "throughput_at_sla_per_s" in capsys.readouterr().out


def test_bad_arguments_fail_before_any_work(onnx_model, tmp_path, capsys):
    model, inputs = onnx_model
    assert main(["serve-bench", "--model", str(tmp_path / "missing.onnx"), "--inputs", str(inputs)]) == 2
    bad_policy = ["--policy", "dynamic(max_wait_ms=-1)"]
    assert main(["serve-bench", "--model", str(model), "--inputs", str(inputs), *bad_policy]) == 2
    assert "max_wait_ms" in capsys.readouterr().err


def test_a_recipe_adds_its_candidate_to_the_table(onnx_model, tmp_path):
    model, inputs = onnx_model
    out = tmp_path / "out"
    code = main(["serve-bench", "--model", str(model), "--inputs", str(inputs), "--max-p99-ms", "50", "--smoke",
                 "--policy", "none", "--recipe", "quantize(scheme=dynamic-int8, runtime=onnxruntime)",
                 "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "serve_bench.csv")
    assert len(table) == 2 and table.candidate.str.contains("quantize").any()
    assert main(["serve-bench", "--model", str(model), "--inputs", str(inputs), "--recipe", "squash(x=1)"]) == 2
