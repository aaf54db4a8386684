"""ONNX Runtime quantization on graphs as other exporters write them (built with onnx.helper):
weights in Constant nodes are lifted and really quantized, the artifact is checked (quantized
operators, integer weight share), a graph with nothing to quantize is refused, pre-processing
failures are notes, and the quantizer's log lines never reach the terminal."""
import os
import warnings

import numpy as np
import onnx
import pytest

from optlab.models.user_models import from_onnx
from optlab.recipes.recipe import Quantize, UnsupportedRecipe
from optlab.techniques import onnx_graph
from optlab.techniques.registry import apply
from optlab.testing import constant_weight_mlp_inputs, constant_weight_mlp_onnx
from optlab.testing.graphs import _save_onnx, image_inputs, resize_detector_onnx

ORT = dict(runtime="onnxruntime")


def _wrap(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no calibration set given: expected here
        return from_onnx(path, constant_weight_mlp_inputs(rows=64), threads=1)


@pytest.fixture()
def constant_graph(tmp_path):
    path = constant_weight_mlp_onnx(tmp_path / "const.onnx")
    assert onnx_graph.constant_weights(onnx.load(str(path))) == 3  # w1, b1, w2 (b2 is too small to be a weight)
    return path


def test_constant_weights_are_lifted_and_dynamic_int8_quantizes_them(constant_graph, tmp_path):
    baseline, data = _wrap(constant_graph)
    candidate = apply(Quantize("dynamic-int8", **ORT), baseline.model, data, workdir=tmp_path / "work")
    meta = candidate.meta
    assert meta["quantized_op_types"].get("MatMulInteger", 0) == 2
    assert meta["quantized_weight_share"] > 0.9  # w1 and w2 in int8; only the small biases stay fp32
    assert any("Constant-node weights lifted" in note for note in meta["notes"])
    assert any(note.startswith("int8 check: ") for note in meta["notes"])
    batch = data.test.take(slice(0, 16)).inputs
    base, cand = baseline.predict(batch), candidate.predict(batch)
    assert not np.allclose(base, cand)  # int8 arithmetic really ran
    assert (base.argmax(1) == cand.argmax(1)).mean() >= 0.75


def test_static_int8_on_constant_weights_prints_nothing(constant_graph, tmp_path, capfd):
    baseline, data = _wrap(constant_graph)
    candidate = apply(Quantize("static-int8", calibration="minmax", **ORT), baseline.model, data,
                      workdir=tmp_path / "work")
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    assert candidate.meta["quantized_op_types"].get("DequantizeLinear", 0) >= 2
    assert candidate.meta["quantized_weight_share"] > 0.9


def test_preprocessing_failure_is_a_note_and_leaves_no_file_in_cwd(tmp_path, monkeypatch):
    path = constant_weight_mlp_onnx(tmp_path / "scaler.onnx", scaler=True)  # ORT's shape inference fails on it
    baseline, data = _wrap(path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    candidate = apply(Quantize("dynamic-int8", **ORT), baseline.model, data, workdir=tmp_path / "work")
    assert os.getcwd() == str(cwd)
    assert list(cwd.iterdir()) == []  # no sym_shape_infer_temp.onnx
    assert any("symbolic shape inference failed" in note for note in candidate.meta["notes"])
    assert candidate.meta["quantized_weight_share"] > 0.9


def test_a_graph_with_nothing_to_quantize_is_refused(tmp_path):
    from onnx import helper

    from optlab.testing.graphs import _constant, _onnx_dim

    nodes = [_constant("offset", np.linspace(-1, 1, 16).reshape(1, 16)),
             helper.make_node("Add", ["x", "offset"], ["y"]), helper.make_node("Relu", ["y"], ["logits"])]
    path = _save_onnx(nodes, [_onnx_dim("x", ["N", 16])], [_onnx_dim("logits", ["N", 16])], tmp_path / "add.onnx")
    baseline, data = _wrap(path)
    with pytest.raises(UnsupportedRecipe, match="the quantizer quantized nothing .*no MatMul/Gemm/Conv/Gather"):
        apply(Quantize("dynamic-int8", **ORT), baseline.model, data, workdir=tmp_path / "work")


def test_quantization_report_counts_nothing_in_an_fp32_graph(constant_graph):
    report = onnx_graph.quantization_report(onnx.load(str(constant_graph)))
    assert report["quantized_ops"] == 0 and report["quantized_weight_share"] == 0.0
    assert report["float_weight_elements"] == 16 * 32 + 32 + 32 * 4


def test_log_lines_are_counted_and_deduplicated():
    lines = [f"Expected bias 'layer{i}.bias' to be an initializer" for i in range(64)] + ["other"]
    note = onnx_graph.summarize_lines(lines, "onnxruntime quantizer")
    assert note.startswith("onnxruntime quantizer logged 65 lines (2 distinct")
    assert "x64" in note
    assert onnx_graph.summarize_lines(["", "Collecting tensor data and making histogram ..."], "q") is None


def test_captured_output_restores_logging_and_stderr(capfd):
    import logging
    import sys

    root = logging.getLogger()
    handlers = root.handlers[:]
    notes = []
    with onnx_graph.captured_output(notes, "test"):
        logging.warning("failed to infer the type of tensor: abc. Skip")
        os.write(2, b"C-level line\n")
        print("a print")
        warnings.warn("a warning", UserWarning, stacklevel=1)
    sys.stderr.write("")
    assert root.handlers == handlers
    assert capfd.readouterr() == ("", "")
    assert len(notes) == 1 and "logged 4 lines" in notes[0]


def test_a_study_on_a_constant_weight_graph_prints_no_onnx_runtime_line(tmp_path, capfd):
    from optlab.instruments.latency import Workload
    from optlab.study.study import RunOptions, Study

    path = constant_weight_mlp_onnx(tmp_path / "const.onnx", scaler=True)  # pre-processing fails on it, too
    baseline, data = _wrap(path)
    capfd.readouterr()
    recipes = [Quantize("dynamic-int8", **ORT), Quantize("static-int8", calibration="minmax", **ORT),
               Quantize("static-int8", calibration="entropy", per_channel=True, **ORT)]
    results = Study(baseline, data, recipes, workload=Workload.smoke(memory=False, cold_start=False),
                    results_dir=tmp_path / "results", options=RunOptions(progress=False)).run()
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    assert list(results["status"]) == ["ok"] * 4, results["error"].tolist()
    for notes in results["notes"][1:]:
        assert "Constant-node weights lifted" in notes and "int8 check: " in notes
        assert "symbolic shape inference failed" in notes


def _gemm_graph(path):
    """Unnamed Gemm nodes with Constant weights and biases (a 4-element one too) behind an ai.onnx.ml
    Scaler: pre-processing fails and shape inference leaves the hidden tensors untyped."""
    from onnx import helper

    from optlab.testing.graphs import _constant, _onnx_dim

    rng = np.random.default_rng(0)
    nodes = [_constant("w1", rng.normal(size=(32, 16))), _constant("b1", rng.normal(size=32)),
             _constant("w2", rng.normal(size=(4, 32))), _constant("b2", rng.normal(size=4)),
             helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", offset=[0.0] * 16, scale=[1.0] * 16),
             helper.make_node("Gemm", ["xs", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "gemm", [_onnx_dim("x", ["N", 16])], [_onnx_dim("logits", ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("scheme", ["fp16", "dynamic-int8", "static-int8"])
def test_untyped_tensors_and_constant_biases_are_handled(scheme, tmp_path):
    baseline, data = _wrap(_gemm_graph(tmp_path / "gemm.onnx"))
    candidate = apply(Quantize(scheme, **ORT), baseline.model, data, workdir=tmp_path / "work")
    notes = " ".join(candidate.meta["notes"])
    assert "types of 3 tensors shape inference could not infer" in notes
    assert "Expected bias" not in notes
    if scheme != "fp16":
        assert candidate.meta["quantized_weight_share"] > 0.9
    batch = data.test.take(slice(0, 32)).inputs
    assert (baseline.predict(batch).argmax(1) == candidate.predict(batch).argmax(1)).mean() >= 0.75


def test_an_artifact_larger_than_its_source_gets_a_note(tmp_path):
    path = constant_weight_mlp_onnx(tmp_path / "tiny.onnx", features=4, hidden=4, classes=4)
    baseline, data = from_onnx(path, {"x": np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)},
                               calibration={"x": np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)})
    candidate = apply(Quantize("dynamic-int8", **ORT), baseline.model, data, workdir=tmp_path / "work")
    assert candidate.size_bytes > path.stat().st_size
    assert any(note.startswith("the dynamic-int8 artifact (") and "is larger than its fp32 source" in note
               for note in candidate.meta["notes"])


def test_an_ordinary_exported_graph_gets_no_workaround_notes(tmp_path):
    from optlab.testing import TinyCNN, cnn_inputs, export

    path = export(TinyCNN().eval(), cnn_inputs(), tmp_path / "cnn.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline, data = from_onnx(path, cnn_inputs(rows=32))
    fp16 = apply(Quantize("fp16", **ORT), baseline.model, data, workdir=tmp_path / "fp16")
    assert fp16.meta["notes"] == []
    int8 = apply(Quantize("dynamic-int8", **ORT), baseline.model, data, workdir=tmp_path / "int8")
    assert [note.split(":")[0] for note in int8.meta["notes"]] == ["int8 check"]


def _detector(tmp_path):
    path = resize_detector_onnx(tmp_path / "det.onnx")  # opset 11, Resize, 205 initializers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no calibration set given: expected here
        return path, *from_onnx(path, image_inputs(rows=16), threads=1)


def test_pre_processing_a_proto_fails_on_resize_and_mutates_it(tmp_path):
    """What the quantizer path must avoid: ORT's pre-processing, handed a ModelProto, moves its
    initializers to external data in place, then fails on Resize."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load(str(resize_detector_onnx(tmp_path / "det.onnx")))
    assert len(proto.graph.initializer) > 200
    with pytest.raises(Exception):  # noqa: B017 - ORT raises ValidationError or its own Fail
        quant_pre_process(proto, str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


@pytest.mark.parametrize("per_channel", [False, True])
def test_static_int8_on_an_opset_11_resize_graph_stores_weights_as_integers(per_channel, tmp_path):
    path, baseline, data = _detector(tmp_path)
    before = path.read_bytes()
    work = tmp_path / "work"
    candidate = apply(Quantize("static-int8", calibration="minmax", per_channel=per_channel, **ORT), baseline.model,
                      data, workdir=work)
    assert candidate.meta["quantized_weight_share"] > 0.9
    assert path.read_bytes() == before  # the source graph is never rewritten
    notes = " ".join(candidate.meta["notes"])
    assert "pre-processing failed" not in notes  # handed a file, ORT's pre-processing works here
    assert ("converted to opset 13" in notes) == per_channel
    if per_channel:
        assert onnx_graph.opset(onnx.load(str(candidate.artifact_path))) >= 13
    assert sorted(p.name for p in work.iterdir()) == [candidate.artifact_path.name]  # no intermediate file left
    batch = data.test.take(slice(0, 8)).inputs
    assert np.abs(candidate.predict(batch) - baseline.predict(batch)).mean() < 0.05  # 100 chained int8 blocks


def test_a_failed_attempt_leaves_no_file_behind(tmp_path, monkeypatch):
    path, baseline, data = _detector(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("calibration broke")

    monkeypatch.setattr("onnxruntime.quantization.quantize_static", broken)
    work = tmp_path / "work"
    with pytest.raises(RuntimeError, match="calibration broke"):
        apply(Quantize("static-int8", calibration="minmax", **ORT), baseline.model, data, workdir=work)
    assert list(work.iterdir()) == []


def test_per_channel_that_cannot_reach_opset_13_is_an_unsupported_recipe(tmp_path, monkeypatch):
    path, baseline, data = _detector(tmp_path)

    def refuse(proto, version):
        raise RuntimeError("no adapter for Resize")

    monkeypatch.setattr("onnx.version_converter.convert_version", refuse)
    with pytest.raises(UnsupportedRecipe, match="per-channel int8 needs opset >= 13.*opset 11.*no adapter"):
        apply(Quantize("static-int8", calibration="minmax", per_channel=True, **ORT), baseline.model, data,
              workdir=tmp_path / "work")
