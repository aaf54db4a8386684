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
    report = (out / "report.html").read_text()
    assert (out / "latency_vs_load.svg").read_text().lstrip().startswith("<svg")
    assert "<script" not in report and report.count("data:image/svg+xml") == 2  # offline: pictures, no scripts
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


def _study_results(folder, best_recipe_json):
    """A results.csv as `optlab study` writes it: the model as given and two candidates."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [dict(candidate="baseline", recipe="baseline", recipe_json='{"kind": "baseline"}', status="ok",
                 p99_ms=2.0, throughput_per_s=1000.0, quality_drop=0.0, cost_per_1m_usd=0.5),
            dict(candidate="int8", recipe="int8", recipe_json=best_recipe_json, status="ok", p99_ms=0.5,
                 throughput_per_s=9000.0, quality_drop=0.001, cost_per_1m_usd=0.05),
            dict(candidate="fp16", recipe="fp16", recipe_json='{"kind": "quantize", "scheme": "fp16", '
                 '"runtime": "onnxruntime"}', status="ok", p99_ms=30.0, throughput_per_s=20000.0,
                 quality_drop=0.0, cost_per_1m_usd=0.02)]
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def test_serve_bench_serves_what_a_study_recommends_under_the_same_sla(onnx_model, tmp_path, capsys):
    from optlab.recipes.recipe import Quantize

    model, inputs = onnx_model
    int8 = Quantize("dynamic-int8", runtime="onnxruntime")
    study = _study_results(tmp_path / "study", int8.to_json())
    out = tmp_path / "out"
    code = main(["serve-bench", "--model", str(model), "--inputs", str(inputs), "--max-p99-ms", "10",
                 "--study", str(study), "--smoke", "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "serve_bench.csv")
    assert set(table.candidate) == {"baseline", int8.name}  # fp16 is cheaper but misses p99 <= 10 ms
    report = (out / "report.html").read_text()
    assert "<script" not in report and report.count("data:image/svg+xml") == 2


def test_a_study_that_recommends_the_model_as_given_or_nothing_is_one_line(onnx_model, tmp_path, capsys):
    model, inputs = onnx_model
    study = _study_results(tmp_path / "study", '{"kind": "quantize", "scheme": "dynamic-int8", '
                                               '"runtime": "onnxruntime"}')
    args = ["serve-bench", "--model", str(model), "--inputs", str(inputs), "--study", str(study)]
    assert main([*args, "--max-p99-ms", "0.1"]) == 2  # nothing meets it
    assert main([*args[:-1], str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "no results.csv there" in err and "Traceback" not in err
