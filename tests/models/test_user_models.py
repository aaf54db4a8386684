"""Analysts' models: real ONNX files of several shapes through the wrapper and a small study."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from optlab.instruments.latency import Workload
from optlab.models.user_models import CalibrationOnBenchmarkData, from_module, from_onnx
from optlab.recipes.recipe import Compile, Prune, Quantize
from optlab.study.study import RunOptions, Study
from optlab.testing import (
    ScoresOnly,
    TinyCNN,
    TokenClassifier,
    TwoHeads,
    cnn_inputs,
    export,
    feature_inputs,
    token_inputs,
)

WORKLOAD = Workload.smoke(memory=False, cold_start=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("byom")
    torch.manual_seed(0)
    return {
        "cnn": export(TinyCNN(), cnn_inputs(), root / "cnn.onnx"),
        "tokens": export(TokenClassifier(), token_inputs(), root / "tokens.onnx", dynamic_seq=True),
        "two_heads": export(TwoHeads(), feature_inputs(), root / "two_heads.onnx", output_names=("scores", "value")),
        "opset11": export(TinyCNN(), cnn_inputs(), root / "cnn11.onnx", opset=11),
    }


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationOnBenchmarkData)
        return fn(*args, **kwargs)


def _study(baseline, data, recipes, tmp_path):
    return Study(baseline, data, recipes, workload=WORKLOAD, results_dir=tmp_path / "results",
                 options=RunOptions(progress=False)).run()


def test_cnn_without_labels_quality_is_agreement(files, tmp_path):
    baseline, data = _quiet(from_onnx, files["cnn"], cnn_inputs(rows=64))
    assert data.task == "outputs" and baseline.runtime == "onnxruntime"
    results = _study(baseline, data, [Compile("onnxruntime", graph_level="basic"),
                                      Quantize("dynamic-int8", runtime="onnxruntime")], tmp_path)
    assert list(results["status"]) == ["ok", "ok", "ok"], results["error"].tolist()
    assert results.loc[0, "quality"] == pytest.approx(1.0) and results.loc[0, "quality_drop"] == pytest.approx(0.0)
    assert results.loc[1, "agreement"] == pytest.approx(1.0)  # fp32 on another graph level
    assert 0.5 < results.loc[2, "agreement"] <= 1.0 and results.loc[2, "metric"] == "agreement"


def test_cnn_with_labels_uses_the_task_metric(files, tmp_path):
    inputs = cnn_inputs(rows=64)
    labels = np.random.default_rng(1).integers(0, 10, 64)
    baseline, data = _quiet(from_onnx, files["opset11"], inputs, labels=labels, metric="accuracy")
    results = _study(baseline, data, [Quantize("static-int8", runtime="onnxruntime", calibration_samples=32)], tmp_path)
    assert list(results["status"]) == ["ok", "ok"] and set(results["metric"]) == {"accuracy"}
    assert results.loc[0, "quality"] == pytest.approx((TinyCNN_predictions(baseline, inputs) == labels).mean())


def TinyCNN_predictions(baseline, inputs):
    return baseline.predict(inputs).argmax(axis=1)


def test_two_int64_inputs_and_a_dynamic_sequence(files, tmp_path):
    baseline, data = _quiet(from_onnx, files["tokens"], token_inputs(rows=48, seq=30),
                            calibration=token_inputs(rows=16, seq=20, seed=3))
    assert data.calibration.inputs["input_ids"].shape == (16, 20)
    results = _study(baseline, data, [Quantize("dynamic-int8", runtime="onnxruntime"), Prune(0.5)], tmp_path)
    assert list(results["status"]) == ["ok", "ok", "error"]
    assert results.loc[2, "error"].startswith("UnsupportedRecipe")  # pruning needs a torch module


def test_two_outputs_are_compared_one_by_one(files, tmp_path):
    baseline, data = _quiet(from_onnx, files["two_heads"], feature_inputs(rows=40))
    assert [o["name"] for o in data.meta["outputs"]] == ["scores", "value"]
    assert baseline.predict(feature_inputs(rows=3)).shape == (3, 5)  # 4 scores + 1 value, flattened
    results = _study(baseline, data, [Quantize("dynamic-int8", runtime="onnxruntime")], tmp_path)
    assert list(results["status"]) == ["ok", "ok"]
    assert results.loc[1, "quality"] == pytest.approx(results.loc[1, "agreement"])


def test_a_callable_metric_with_labels(files, tmp_path):
    inputs = feature_inputs(rows=40)
    target = np.random.default_rng(2).normal(size=40)

    def neg_mse(labels, outputs):
        return -float(np.mean((outputs[:, -1] - labels) ** 2))

    baseline, data = _quiet(from_onnx, files["two_heads"], inputs, labels=target, metric=neg_mse)
    results = _study(baseline, data, [Compile("onnxruntime", graph_level="basic")], tmp_path)
    assert set(results["metric"]) == {"neg_mse"}
    assert results.loc[1, "quality_drop"] == pytest.approx(0.0, abs=1e-6)


def test_torch_module_takes_every_recipe(tmp_path):
    torch.manual_seed(0)
    baseline, data = _quiet(from_module, ScoresOnly().eval(), feature_inputs(rows=40))
    results = _study(baseline, data, [Prune(0.5, finetune_epochs=0), Quantize("dynamic-int8", runtime="onnxruntime")],
                     tmp_path)
    assert list(results["status"]) == ["ok", "ok", "ok"], results["error"].tolist()


def test_calibration_on_benchmark_data_warns(files):
    with pytest.warns(CalibrationOnBenchmarkData, match="flatters"):
        from_onnx(files["cnn"], cnn_inputs(rows=8))


@pytest.mark.parametrize("kwargs, message", [
    ({"labels": np.zeros(7)}, "labels were given without a metric"),
    ({"labels": np.zeros(7), "metric": "accuracy"}, "labels have shape \\[7\\] but the inputs have 8 rows"),
    ({"metric": "accuracy"}, "needs labels"),
    ({"labels": np.zeros(8), "metric": "auc"}, "expects one click score per row"),
    ({"labels": np.zeros(8), "metric": "bleu"}, "unknown metric 'bleu'"),
])
def test_bad_labels_and_metrics_are_named(files, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _quiet(from_onnx, files["cnn"], cnn_inputs(rows=8), **kwargs)


def test_wrong_inputs_list_what_the_model_expects(files):
    with pytest.raises(ValueError, match=r"missing \['image'\].*image: float32\[batch, 1, 8, 8\]"):
        _quiet(from_onnx, files["cnn"], {"pixels": np.zeros((4, 1, 8, 8), np.float32)})


def test_command_line_writes_results_and_report(files, tmp_path):
    np.savez(tmp_path / "inputs.npz", **cnn_inputs(rows=32))
    np.save(tmp_path / "labels.npy", np.random.default_rng(0).integers(0, 10, 32))
    out = tmp_path / "study"
    done = subprocess.run([sys.executable, "-m", "optlab.cli", "study", "--model", str(files["cnn"]), "--inputs",
                           str(tmp_path / "inputs.npz"), "--labels", str(tmp_path / "labels.npy"), "--metric",
                           "accuracy", "--recipe", "compile(runtime=onnxruntime, graph_level=basic)", "--recipe",
                           "quantize(scheme=dynamic-int8, runtime=onnxruntime)", "--max-p99-ms", "50",
                           "--max-quality-drop", "0.5", "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "results.csv").exists() and (out / "report.html").exists()
    assert "quantize(scheme=dynamic-int8, runtime=onnxruntime)" in done.stdout


def test_command_line_refuses_a_pickle_checkpoint(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not loaded")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 2)))
    done = subprocess.run([sys.executable, "-m", "optlab.cli", "study", "--model", str(tmp_path / "model.pt"),
                           "--inputs", str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "does not unpickle checkpoints" in done.stderr


# --- graphs as other exporters write them, and bad input at wrap time (issue 13) ------------------

def test_a_streaming_model_with_a_scalar_and_a_state_on_axis_1_is_studied(tmp_path):
    from optlab.testing import streaming_inputs, streaming_onnx

    baseline, data = _quiet(from_onnx, streaming_onnx(tmp_path / "s.onnx"), streaming_inputs(rows=32))
    assert any("batch-first wrapper" in note and "sr" in note for note in baseline.meta["notes"])
    assert [(o["name"], o["kind"]) for o in data.meta["outputs"]] == [("logits", "classes"), ("state_out", "values")]
    assert all(np.shape(r["sr"])[0] == np.shape(r["x"])[0] for r in data.requests)  # constants repeated per row
    results = _study(baseline, data, [Quantize("dynamic-int8", runtime="onnxruntime")], tmp_path)
    assert list(results["status"]) == ["ok", "ok"], results["error"].tolist()
    assert results.loc[1, "agreement"] > 0.9 and "int8 check" in results.loc[1, "notes"]


def test_a_minus_one_batch_axis_loads(tmp_path):
    from optlab.testing import constant_weight_mlp_inputs, constant_weight_mlp_onnx

    path = constant_weight_mlp_onnx(tmp_path / "m.onnx", batch_dim=-1)
    baseline, data = _quiet(from_onnx, path, constant_weight_mlp_inputs(rows=16))
    assert baseline.predict(data.test.take(slice(0, 3)).inputs).shape == (3, 4)


def test_a_sequence_output_must_be_declared_and_is_then_compared_per_position(tmp_path):
    from optlab.testing import sequence_onnx

    path = sequence_onnx(tmp_path / "seq.onnx")
    inputs = {"x": np.random.default_rng(0).normal(size=(40, 8, 6)).astype(np.float32)}
    with pytest.raises(ValueError, match=r"'scores' has shape \(N, 8, 5\).*\{'scores': 'sequence'\}"):
        _quiet(from_onnx, path, inputs)
    baseline, data = _quiet(from_onnx, path, inputs, output_kinds={"scores": "sequence"})
    results = _study(baseline, data, [Quantize("fp16", runtime="onnxruntime")], tmp_path)
    assert list(results["status"]) == ["ok", "ok"], results["error"].tolist()
    assert results.loc[1, "output_kinds"] == "scores=sequence (declared)"
    assert results.loc[1, "agreement"] > 0.95 and results.loc[1, "quality_drop"] < 0.05  # fp16 barely moves


def test_a_dense_map_output_is_inferred(tmp_path):
    from optlab.testing import dense_map_onnx

    inputs = {"image": np.random.default_rng(0).normal(size=(24, 1, 8, 8)).astype(np.float32)}
    baseline, data = _quiet(from_onnx, dense_map_onnx(tmp_path / "dense.onnx"), inputs)
    assert data.meta["outputs"][0]["kind"] == "dense"
    results = _study(baseline, data, [Compile("onnxruntime", graph_level="basic")], tmp_path)
    assert results.loc[1, "agreement"] == pytest.approx(1.0)
    assert results.loc[1, "output_kinds"] == "prob=dense (inferred from shape (N, 1, 8, 8))"


def test_nan_inputs_are_named_at_wrap_time(files):
    inputs = cnn_inputs(rows=8)
    inputs["image"][0, 0, 0, :3] = np.nan
    with pytest.raises(ValueError, match="input 'image' has 3 NaN and 0 infinite values"):
        _quiet(from_onnx, files["cnn"], inputs)


@pytest.mark.parametrize("labels, message", [
    (np.linspace(0, 2, 8), "non-integer values"),
    (np.r_[np.zeros(7), np.nan], "NaN or infinite"),
    (np.array(list("abcdefgh")), "needs integer class indices"),
])
def test_labels_that_are_not_class_indices_are_refused(files, labels, message):
    with pytest.raises(ValueError, match=message):
        _quiet(from_onnx, files["cnn"], cnn_inputs(rows=8), labels=labels, metric="accuracy")


def test_float_labels_that_are_whole_numbers_are_accepted(files):
    _, data = _quiet(from_onnx, files["cnn"], cnn_inputs(rows=8), labels=np.arange(8.0), metric="accuracy")
    assert data.test.labels.dtype == np.int64 and data.test.labels.tolist() == list(range(8))


def test_an_empty_baseline_map_warns_at_wrap_time_and_a_collapsed_candidate_is_rejected(tmp_path):
    from optlab.instruments.quality import evaluate, gate
    from optlab.models.output_checks import DegenerateSample
    from optlab.testing.graphs import image_inputs, resize_detector_onnx

    path = resize_detector_onnx(tmp_path / "det.onnx", blocks=4, bias=-12.0)  # the map is empty everywhere
    with pytest.warns(DegenerateSample) as caught:
        baseline, data = from_onnx(path, image_inputs(rows=12), calibration=image_inputs(rows=4, seed=2))
    (line,) = [str(w.message) for w in caught if w.category is DegenerateSample]
    assert line == ("on these inputs the map 'prob' is empty (nothing above 0.5) in every row: quality figures "
                    "cannot separate candidates; give representative inputs")
    assert data.meta["degenerate_sample"] and line in baseline.meta["notes"]
    base = baseline.predict(data.test.inputs)
    collapsed = evaluate(np.zeros_like(base), data, baseline)  # an int8 map that collapsed to zeros
    assert collapsed.degenerate_sample is True
    assert collapsed.agreement == 0.0 and collapsed.relative_error == pytest.approx(1.0)
    assert not gate(collapsed, max_drop=0.01)
    assert evaluate(base * 1.001, data, baseline).agreement == pytest.approx(1.0)


def test_a_blank_everywhere_sequence_warns_and_a_varied_sample_does_not(tmp_path):
    from optlab.models.output_checks import DegenerateSample
    from optlab.testing import sequence_onnx

    path = sequence_onnx(tmp_path / "rec.onnx", steps=8, features=6, classes=5)
    blank = np.zeros((10, 8, 6), np.float32)  # every position scores the same: class of the largest bias
    with pytest.warns(DegenerateSample, match=r"predicts .* at every position of 'scores': quality figures"):
        _, data = from_onnx(path, {"x": blank}, output_kinds={"scores": "sequence"},
                            calibration={"x": blank[:2]})
    assert data.meta["degenerate_sample"]
    varied = np.random.default_rng(0).normal(size=(10, 8, 6)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateSample)
        _, data = from_onnx(path, {"x": varied}, output_kinds={"scores": "sequence"}, calibration={"x": varied[:2]})
    assert data.meta["degenerate_sample"] is False
