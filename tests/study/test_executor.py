"""The executor seam: run_task turns a task into one row; dependencies' chatter goes into its notes."""
import dataclasses
import logging
import os
import time
import warnings

import pytest

from optlab.instruments.latency import Workload
from optlab.instruments.quality import reference
from optlab.models import zoo
from optlab.recipes.recipe import Compile
from optlab.study.captured import Captured, capture
from optlab.study.executor import InProcessExecutor, Task, TaskContext, run_task

FAST = Workload.smoke(threads=1, throughput_batch_sizes=(8,), memory=False, cold_start=False, n_boot=50)
ORT_LINE = ("2026-12-01 21:00:00.123456 [W:onnxruntime:, graph.cc:42 Load] "
            "Expected bias 'fc{}.bias' to be an initializer")


@pytest.fixture(scope="module")
def base(digits_model):
    return zoo.baseline(digits_model, name="digits-teacher")


def chatty(base):
    """The baseline, but each prediction warns three ways, like a quantizer or a runtime does."""
    calls = {"n": 0}

    def predict(batch):
        calls["n"] += 1
        warnings.warn(f"layer {calls['n'] % 3} uses a deprecated API", DeprecationWarning, stacklevel=1)
        logging.getLogger("somelib.quantization").warning("bias 'fc%d.bias' is not an initializer", calls["n"] % 4)
        os.write(2, (ORT_LINE.format(calls["n"] % 5) + "\n").encode())
        return base.predict_fn(batch)

    return dataclasses.replace(base, predict_fn=predict)


def context(candidate, data, **extra):
    return TaskContext(candidate, data, FAST, data.test.inputs, reference(candidate, data, "test"), **extra)


def task(tmp_path, recipe=None):
    return Task(recipe, "ab" * 32, tmp_path / "work")


def test_warnings_are_counted_and_deduplicated_into_notes_not_printed(base, digits_data, tmp_path, capfd):
    warnings.simplefilter("always", DeprecationWarning)  # pytest restores the filters after the test
    candidate = chatty(base)
    ctx = context(base, digits_data)
    ctx.baseline = candidate
    handlers = list(logging.getLogger().handlers)
    capfd.readouterr()
    row = run_task(ctx, task(tmp_path))
    printed = capfd.readouterr()
    assert row["status"] == "ok", row.get("error")
    assert logging.getLogger().handlers == handlers  # restored
    assert "initializer" not in printed.err + printed.out and "deprecated" not in printed.err + printed.out
    assert row["warnings_count"] >= 3 * FAST.min_samples  # every call's three lines were counted
    notes = row["notes"]
    assert "captured" in notes and "(3 kind(s))" in notes, notes  # numbers and quoted names folded
    assert "[onnxruntime]" in notes and "[somelib.quantization]" in notes and "[DeprecationWarning]" in notes
    assert "2026-12-01" not in notes  # runtime timestamps dropped
    os.write(2, b"after the task\n")
    assert "after the task" in capfd.readouterr().err  # fd 2 is back


def test_verbose_prints_instead_of_capturing(base, digits_data, tmp_path, capfd):
    ctx = context(chatty(base), digits_data, verbose=True)
    capfd.readouterr()
    row = run_task(ctx, task(tmp_path))
    assert row["status"] == "ok" and row["warnings_count"] == 0
    assert "Expected bias" in capfd.readouterr().err


def test_capture_restores_logging_handlers_and_warning_filters():
    root = logging.getLogger()
    handlers, filters = list(root.handlers), list(warnings.filters)
    with capture() as captured:
        logging.getLogger("x.y").error("boom %s", 1)
        warnings.warn("careful", UserWarning, stacklevel=1)
    assert root.handlers == handlers and warnings.filters == filters
    assert {text for _, text in captured.lines} == {"boom 1", "careful"}
    assert Captured().summary() == "" and captured.summary().startswith("captured 2 warning line(s)")


def test_a_task_after_the_deadline_is_skipped_and_claims_nothing(base, digits_data, tmp_path):
    ctx = context(base, digits_data, deadline=time.monotonic() - 1, stop_note="not run: time limit (5 s)")
    row = run_task(ctx, task(tmp_path, Compile(graph_level="basic")))
    assert row["status"] == "skipped" and row["error"] == "not run: time limit (5 s)"
    assert row["recipe"] == "compile(runtime=onnxruntime, graph_level=basic)" and row["fingerprint"] == "ab" * 32
    assert not {"p50_ms", "p99_ms", "quality", "accuracy"} & set(row)
    assert not (tmp_path / "work").exists()  # nothing was built


def test_failing_recipe_is_an_error_row_naming_the_stage(base, digits_data, tmp_path):
    ctx = context(base, digits_data)
    rows = list(InProcessExecutor().run(lambda t: run_task(ctx, t),
                                        [task(tmp_path, Compile(provider="cuda"))]))
    assert len(rows) == 1 and rows[0]["status"] == "error" and rows[0]["error_stage"] == "apply"
    assert rows[0]["error"].startswith("UnsupportedRecipe: ") and rows[0]["source"] == "local"


def test_onnx_runtime_c_level_log_lines_are_captured(tmp_path, capfd):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    unused = numpy_helper.from_array(np.ones(3, np.float32), "unused_weight")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=[unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    capfd.readouterr()
    with capture() as captured:
        ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert "unused_weight" not in capfd.readouterr().err
    assert any(source == "onnxruntime" and "unused_weight" in text for source, text in captured.lines), captured.lines
