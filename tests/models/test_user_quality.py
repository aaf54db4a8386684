"""Quality judged the way an analyst's model means it: regression, embeddings, a broken baseline,
inputs too big or too few, and several outputs from a torch module (tiny models built here)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from optlab.instruments import metrics
from optlab.instruments.latency import Workload
from optlab.instruments.quality import evaluate, gate, reference
from optlab.models import wrap_checks
from optlab.models.user_models import CalibrationOnBenchmarkData, from_module, from_onnx
from optlab.recipes.recipe import Quantize
from optlab.study.study import Study
from optlab.testing import export

WORKLOAD = Workload.smoke(memory=False, cold_start=False)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationOnBenchmarkData)
        warnings.simplefilter("ignore", wrap_checks.FewRows)
        return fn(*args, **kwargs)


def _diabetes():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    """A diabetes MLP (targets 25-346) exported to ONNX, with held-out rows and their targets."""
    x, y = _diabetes()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    model[-1].bias.data.fill_(150.0)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(1500):  # long enough for weights whose int8 rounding moves predictions
        optimizer.zero_grad()
        loss = ((model(torch.tensor(x[:300]))[:, 0] - torch.tensor(y[:300])) ** 2).mean()
        loss.backward()
        optimizer.step()
    path = export(model.eval(), {"x": x[:2]}, tmp_path_factory.mktemp("reg") / "diabetes.onnx", output_names=("y",))
    return path, {"x": x[300:]}, y[300:], {"x": x[:300]}


def test_a_regression_output_is_judged_by_its_error_not_its_sign(regression, tmp_path):
    path, inputs, _, calibration = regression
    baseline, data = _quiet(from_onnx, path, inputs, calibration=calibration)
    assert data.meta["outputs"][0]["kind"] == "regression"
    results = Study(baseline, data, [Quantize("static-int8", runtime="onnxruntime")], workload=WORKLOAD,
                    results_dir=tmp_path / "results", progress=False).run()
    assert list(results["status"]) == ["ok", "ok"], results["error"].tolist()
    int8 = results.iloc[1]
    assert int8["max_abs_diff"] > 1.0 and int8["relative_error"] > 0.005  # int8 moved the predictions
    assert int8["quality_drop"] > 0.01  # ... and the quality says so (cosine of one column would say 0)
    assert "y=regression" in int8["output_kinds"]
    assert gate(evaluate(np.asarray(baseline.predict(inputs)) * 1.05, data, reference(baseline, data))).failures


def test_a_constant_output_candidate_is_rejected(regression):
    path, inputs, _, calibration = regression
    baseline, data = _quiet(from_onnx, path, inputs, calibration=calibration)
    base = reference(baseline, data)
    constant = evaluate(np.ones((len(data.test), 1)), data, base)
    assert constant.quality_drop > 0.9 and not gate(constant)
    assert gate(evaluate(base.logits.copy(), data, base))  # the baseline's own outputs pass


def test_regression_metrics_point_the_right_way_with_paired_intervals(regression):
    path, inputs, targets, calibration = regression
    baseline, data = _quiet(from_onnx, path, inputs, labels=targets, metric="mae", calibration=calibration)
    base = reference(baseline, data)
    worse = evaluate(2 * base.logits - targets[:, None], data, base)  # every row's error doubled
    assert worse.metric == "mae" and not metrics.higher_is_better("mae") and metrics.higher_is_better("r2")
    assert worse.quality > worse.baseline_quality and worse.quality_drop > 0  # a larger error is a positive drop
    assert 0 < worse.quality_drop_ci_low <= worse.quality_drop <= worse.quality_drop_ci_high
    by_metric = {s["group"]: s for s in worse.slices if s["slice"] == "metric"}
    assert set(by_metric) == {"mae", "rmse", "r2"} and by_metric["r2"]["drop"] > 0
    assert by_metric["rmse"]["drop_ci_low"] <= by_metric["rmse"]["drop"] <= by_metric["rmse"]["drop_ci_high"]
    with pytest.raises(ValueError, match="needs class scores but the model outputs one value per row"):
        _quiet(from_onnx, path, inputs, labels=targets, metric="accuracy")


class LogitsAndEmbedding(nn.Module):
    def __init__(self, style: str = "dict"):
        super().__init__()
        self.body = nn.Linear(6, 16)
        self.classes = nn.Linear(16, 5)
        self.embed = nn.Linear(16, 32)
        self.style = style

    def forward(self, features):
        hidden = torch.relu(self.body(features))
        logits, embedding = self.classes(hidden), self.embed(hidden)
        if self.style == "tuple":
            return logits, embedding
        if self.style == "dataclass":
            return Outputs(logits=logits, embedding=embedding, attentions=None)
        return {"logits": logits, "embedding": embedding}


@dataclass
class Outputs:
    logits: torch.Tensor
    embedding: torch.Tensor
    attentions: torch.Tensor | None


def _features(rows=40):
    return {"features": np.random.default_rng(0).normal(size=(rows, 6)).astype(np.float32)}


@pytest.mark.parametrize("style", ["dict", "dataclass"])
def test_two_outputs_from_a_module_each_get_a_kind_and_the_embedding_is_compared_by_cosine(style):
    torch.manual_seed(0)
    baseline, data = _quiet(from_module, LogitsAndEmbedding(style).eval(), _features())
    assert [(o["name"], o["kind"], o["width"]) for o in data.meta["outputs"]] == [
        ("logits", "classes", 5), ("embedding", "values", 32)]
    base = reference(baseline, data)
    moved = base.logits.copy()
    moved[:, 5:] = moved[:, 5:] * 1.5  # the embedding keeps its direction, not its length
    quality = evaluate(moved, data, base)
    logits, embedding = quality.slices
    assert logits["quality"] == 1.0 and embedding["measure"].startswith("min(cosine")
    assert embedding["cosine"] == pytest.approx(1.0) and embedding["relative_error"] == pytest.approx(0.5)
    assert quality.worst_slice == "output=embedding" and not gate(quality)


def test_a_tuple_output_module_is_wrapped_and_every_output_named():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="output 'output1' \\(N, 32\\) is taken for class scores"):
        baseline, data = _quiet(from_module, LogitsAndEmbedding("tuple").eval(), _features())
    assert [o["name"] for o in data.meta["outputs"]] == ["output0", "output1"]
    assert np.asarray(baseline.predict(_features(3))).shape == (3, 37)
    _, declared = _quiet(from_module, LogitsAndEmbedding("tuple").eval(), _features(),
                         output_kinds={"output1": "values"})
    assert declared.meta["outputs"][1]["kind"] == "values"


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 3)

    def forward(self, features):
        return self.head(features) + torch.randn(features.shape[0], 3)


def test_a_baseline_that_disagrees_with_itself_is_refused_at_wrap_time():
    torch.manual_seed(0)
    with pytest.raises(wrap_checks.NonDeterministicBaseline, match="output 'output0' moved by up to"):
        _quiet(from_module, Noisy().eval(), _features())
    baseline, data = _quiet(from_module, Noisy().eval(), _features(), deterministic=False)
    assert any("disagrees with itself" in note for note in baseline.meta["notes"])
    fresh = np.asarray(baseline.predict(data.test.inputs))  # the baseline again: as noisy as a candidate
    quality = evaluate(fresh, data, reference(baseline, data))
    assert 0 < data.meta["self_drop"] < 1
    assert quality.quality_drop == pytest.approx(1.0 - quality.agreement - data.meta["self_drop"])


class NaNOutput(nn.Module):
    def forward(self, x):
        return x.sum(dim=1, keepdim=True) * torch.tensor(float("nan"))


def test_a_nan_output_model_exits_non_zero_before_any_candidate(tmp_path):
    path = export(NaNOutput(), {"x": np.ones((2, 4), np.float32)}, tmp_path / "nan.onnx", output_names=("y",))
    np.savez(tmp_path / "x.npz", x=np.ones((40, 4), np.float32))
    done = subprocess.run([sys.executable, "-m", "optlab.cli", "study", "--model", str(path), "--inputs",
                           str(tmp_path / "x.npz"), "--smoke", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "output 'y' holds 40 NaN and 0 infinite values" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out" / "results.csv").exists()


HUGE_ROWS = textwrap.dedent("""
    import resource, sys
    import numpy as np, onnx, psutil
    from onnx import TensorProto, helper
    from optlab.models.user_models import from_onnx
    features = 10_000_000
    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1, axes=[1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])])
    path = sys.argv[1]
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), path)
    x = np.ones((4, features), np.float32)  # 40 MB a row
    vms = psutil.Process().memory_info().vms
    resource.setrlimit(resource.RLIMIT_AS, (vms + 400 * 2**20, resource.RLIM_INFINITY))
    try:
        from_onnx(path, {"x": x}, calibration={"x": x[:1]})
    except ValueError as error:
        print("REFUSED", error)
""")


def test_rows_of_ten_million_floats_are_refused_with_the_figure_under_a_memory_limit(tmp_path):
    done = subprocess.run([sys.executable, "-c", HUGE_ROWS, str(tmp_path / "sum.onnx")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REFUSED the inputs take 38.1 MiB per row" in done.stdout and "GiB are available" in done.stdout


def test_the_largest_batch_that_fits_is_chosen_from_the_figures():
    batch = {"x": np.zeros((64, 1000), np.float32)}  # 4000 bytes a row
    roomy = wrap_checks.plan_memory(batch, available=10 * 2**30)
    assert roomy.max_batch_rows == 64
    tight = wrap_checks.plan_memory(batch, available=4000 * wrap_checks.RUNTIME_COPIES * 2 * 5)
    assert tight.max_batch_rows == 4 and "batches of up to 4 rows" in tight.note()
    with pytest.raises(wrap_checks.NotEnoughMemory, match="even a batch of 1 row needs"):
        wrap_checks.plan_memory(batch, available=1000)


def test_one_row_is_warned_and_shows_no_interval(regression):
    path, inputs, _, _ = regression
    with pytest.warns(wrap_checks.FewRows, match="only 1 input rows: quality intervals need at least 32"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationOnBenchmarkData)
            baseline, data = from_onnx(path, {"x": inputs["x"][:1]})
    quality = evaluate(np.asarray(baseline.predict(data.test.inputs)) + 1.0, data, reference(baseline, data))
    assert quality.quality_drop > 0 and quality.quality_drop_ci_low is None and quality.drop_significant is None
    assert any("only 1 input rows" in note for note in baseline.meta["notes"])


class Teacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.body(x)


class SmallStudent(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.body(x)


def test_distill_trains_the_users_own_student_on_their_rows(tmp_path):
    from optlab.recipes.recipe import Distill, from_json
    from optlab.techniques.registry import apply

    x, y = _diabetes()
    torch.manual_seed(0)
    baseline, data = _quiet(from_module, Teacher().eval(), {"x": x}, labels=y, metric="mae", finetune_share=0.5)
    recipe = Distill(student=SmallStudent, epochs=3)
    assert recipe.student.endswith(":SmallStudent") and from_json(recipe.to_json()) == recipe
    student = apply(recipe, baseline.model, data, workdir=tmp_path)
    assert student.meta["student_params"] < student.meta["teacher_params"]
    assert np.asarray(student.predict(data.test.inputs)).shape == (len(data.test), 1)
    assert np.isfinite(student.meta["final_loss"])
    with pytest.raises(ValueError, match="cannot be written down"):
        Distill(student=lambda: SmallStudent())
    with pytest.raises(ValueError, match="has no architectures for dataset 'user'; give your own student"):
        apply(Distill(epochs=1), baseline.model, data, workdir=tmp_path)


def test_a_save_pretrained_folder_is_pruned_and_its_candidate_reloads(tmp_path):
    import importlib

    from optlab.models.hf_folder import from_folder
    from optlab.recipes.recipe import Prune
    from optlab.techniques.registry import apply
    from optlab.testing.tiny_text import texts_csv, tiny_bert_folder

    folder = tiny_bert_folder(tmp_path / "my-model", steps=10)
    baseline, data = _quiet(from_folder, folder, texts_csv(tmp_path / "texts.csv", rows=48))
    pruned = apply(Prune(sparsity=0.5, finetune_epochs=0), baseline.model, data, workdir=tmp_path / "work")
    module, _, function = pruned.loader.partition(":")  # what a fresh process does: the pickle must load
    again = getattr(importlib.import_module(module), function)(pruned.artifact_path, **pruned.loader_options)
    batch = {k: v[:4] for k, v in data.test.inputs.items()}
    assert np.allclose(np.asarray(again(batch)), np.asarray(pruned.predict(batch)), atol=1e-5)


def test_the_small_messages_name_the_problem_and_the_fix(tmp_path):
    from optlab.models.hf_folder import check_folder

    inputs = {"x": np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)}
    path = export(nn.Linear(10, 1), {"x": inputs["x"][:2]}, tmp_path / "linear.onnx", output_names=("y",))
    with pytest.raises(ValueError, match="calibration file .*narrow.npz: input 'x' axis 1 has size 7"):
        np.savez(tmp_path / "narrow.npz", x=np.zeros((20, 7), np.float32))
        _quiet(from_onnx, path, inputs, calibration=tmp_path / "narrow.npz")
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="has a config.json but no weights"):
        check_folder(folder)
    fixed = export(nn.Linear(10, 3), {"x": inputs["x"][:1]}, tmp_path / "fixed.onnx")  # batch of 1 baked in
    import onnx

    proto = onnx.load(str(fixed))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, str(fixed))
    with pytest.raises(ValueError, match="the graph fixes the batch at 1 .* dynamic_axes="):
        _quiet(from_onnx, fixed, inputs)


def test_a_folder_named_like_an_onnx_file_is_called_a_folder(tmp_path, capsys):
    from optlab.cli.main import main

    (tmp_path / "model.onnx").mkdir()
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 2), np.float32))
    assert main(["study", "--model", str(tmp_path / "model.onnx"), "--inputs", str(tmp_path / "x.npz"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "is a folder named like an ONNX file" in capsys.readouterr().err
