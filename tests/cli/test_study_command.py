"""`optlab study`: every flag checked before work starts (one line, exit 2); a time limit or Ctrl-C
still writes results.csv and report.html naming what was not run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from optlab.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model = slow_graph(folder / "mlp.onnx", 1, width=16)  # one layer: quick
    inputs = folder / "inputs.npz"
    np.savez(inputs, x=np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32))
    labels = folder / "labels.npy"
    np.save(labels, np.zeros(64, np.int64))
    (folder / "a-file").write_text("not a folder")
    return folder, model, inputs, labels


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


BAD = [
    (["--max-p99-ms", "-1"], "--max-p99-ms: -1 must be > 0 (a latency in milliseconds)"),
    (["--max-p99-ms", "fast"], "'fast' is not a number"),
    (["--max-quality-drop", "nan"], "--max-quality-drop: nan must be >= 0"),
    (["--price-per-hour", "abc"], "--price-per-hour: unknown price preset 'abc'"),
    (["--price-per-hour", "-3"], "--price-per-hour: price_per_hour_usd=-3 must be a positive number"),
    (["--time-limit-s", "0"], "--time-limit-s: 0 must be > 0"),
    (["--metric", "accuracy"], "--metric accuracy needs --labels"),
    (["--labels", "{labels}"], "--labels needs --metric"),
    (["--recipe", "quantize(scheme=int3)"], "--recipe 'quantize(scheme=int3)'"),
    (["--recipe", "shrink(0.5)"], "cannot read recipe 'shrink(0.5)'"),
    (["--recipe", "prune(sparsity=0.5)"], "--recipe 'prune(sparsity=0.5)' needs a PyTorch model"),
    (["--calibration", "{folder}/missing.npz"], "--calibration {folder}/missing.npz: no such file"),
    (["--out", "{folder}/a-file"], "is a file, not a folder"),
    (["--out", "{folder}/a-file/sub"], "is a file, not a folder"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[" ".join(e) for e, _ in BAD])
def test_bad_flags_are_one_line_and_exit_2_before_any_work(files, tmp_path, capsys, extra, message):
    folder, model, inputs, labels = files
    fill = {"labels": labels, "folder": folder}
    extra = [part.format(**fill) for part in extra]
    out = ["--out", str(tmp_path / "out")] if "--out" not in extra else []
    code, err = run_cli(["study", "--model", str(model), "--inputs", str(inputs), *out, *extra], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("optlab study: error: "), err
    assert message.format(**fill) in err and "Traceback" not in err and "Chain" not in err
    assert not (tmp_path / "out").exists()  # nothing was created: no work started


def test_a_results_folder_that_is_a_file_is_refused(files, tmp_path, capsys):
    folder, model, inputs, _ = files
    out = tmp_path / "out"
    out.mkdir()
    (out / "results").write_text("oops")
    code, err = run_cli(["study", "--model", str(model), "--inputs", str(inputs), "--out", str(out)], capsys)
    assert code == 2 and f"{out / 'results'} is in the way (a file)" in err and err.count("\n") == 1


def slow_graph(path: Path, repeats: int, width: int = 1024, classes: int = 10) -> Path:
    """x[N, width] -> (MatMul by one shared weight, Tanh) x repeats -> logits: cheap to store, slow to run."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, width ** -0.5, (width, width)).astype(np.float32), "w")
    head = numpy_helper.from_array(rng.normal(0, 0.1, (width, classes)).astype(np.float32), "head")
    nodes, last = [], "x"
    for i in range(repeats):
        nodes += [helper.make_node("MatMul", [last, "w"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Tanh", [f"m{i}"], [f"t{i}"], name=f"tanh{i}")]
        last = f"t{i}"
    nodes.append(helper.make_node("MatMul", [last, "head"], ["logits"], name="head"))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                              initializer=[weight, head])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def batch_256_seconds(path: Path) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((256, 1024), np.float32)
    session.run(None, {"x": x})
    start = time.perf_counter()
    session.run(None, {"x": x})
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """A graph whose batch-256 call costs at least 1 s on this machine (repeats grown until it does)."""
    folder = tmp_path_factory.mktemp("slow")
    repeats, seconds = 48, 0.0
    for _ in range(4):
        seconds = batch_256_seconds(slow_graph(folder / "slow.onnx", repeats))
        if seconds >= 1.0:
            break
        repeats = int(repeats * min(8.0, 1.3 / max(seconds, 1e-3))) + 1
    assert seconds >= 1.0, f"could not build a graph slow enough ({seconds:.2f} s at {repeats} repeats)"
    inputs = folder / "inputs.npz"
    np.savez(inputs, x=np.random.default_rng(1).normal(size=(64, 1024)).astype(np.float32))
    return folder / "slow.onnx", inputs


def _ctrl_c_as_in_a_shell():
    """In the child: SIGINT handled and unblocked, as a terminal would start it (an ignored or blocked
    SIGINT is inherited from whatever started the test run)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


# `python -m optlab.cli`, saying on stderr's first line the instant the command's clock starts
# (optlab.cli.STARTED, a time.monotonic() reading: one clock for every process on Linux)
CLI_SAYING_ITS_START = ("import sys, optlab.cli as cli; print(f'optlab.cli.STARTED={cli.STARTED!r}', file=sys.stderr, "
                        "flush=True); sys.exit(cli.main())")


def study_command(model, inputs, out, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", CLI_SAYING_ITS_START, "study", "--model", str(model), "--inputs",
                             str(inputs), "--out", str(out), *extra], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_ctrl_c_as_in_a_shell)


def command_started(stderr: str) -> float:
    """The child's optlab.cli.STARTED, from the first line `study_command` makes it print."""
    first = stderr.splitlines()[0] if stderr else ""
    assert first.startswith("optlab.cli.STARTED="), stderr[-3000:]
    return float(first.split("=", 1)[1])


def check_outputs(out: Path, why: str) -> None:
    import pandas as pd

    results = pd.read_csv(out / "results.csv")
    skipped = results[results["status"] == "skipped"]
    assert len(skipped) >= 1 and skipped["error"].str.contains(why).all()
    assert skipped["p99_ms"].isna().all()  # a skipped row claims no figure
    report = (out / "report.html").read_text()
    for name in skipped["candidate"]:
        assert name in report
    assert "not run: " in report


@pytest.mark.slow
def test_time_limit_ends_in_time_and_names_what_was_skipped(slow, tmp_path):
    model, inputs = slow
    out = tmp_path / "out"
    proc = study_command(model, inputs, out, "--time-limit-s", "20")
    stdout, stderr = proc.communicate(timeout=120)
    ended = time.monotonic()
    assert proc.returncode == 0, stderr[-3000:]
    # The limit counts from the command's clock (optlab.cli.STARTED), as the user started it; the
    # interpreter's own start before that line is the machine's, and a busy machine stretched it.
    took = ended - command_started(stderr)
    assert took <= 30, f"--time-limit-s 20 took {took:.1f} s"  # the promise: within 1.5x the limit
    check_outputs(out, "time limit")
    assert "stopped at the 20 s time limit; not run: " in stdout
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_ctrl_c_still_writes_results_and_report(slow, tmp_path):
    model, inputs = slow
    out = tmp_path / "out"
    proc = study_command(model, inputs, out)
    rows = out / "results" / "rows"
    try:
        for _ in range(1200):  # until the baseline row is stored
            if rows.is_dir() and list(rows.glob("*.json")) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    check_outputs(out, "interrupted")
    assert "interrupted; not run: " in stdout


def test_another_studys_folder_is_one_line_naming_both_and_the_fix(files, tmp_path, capsys):
    from optlab.study.store import Store

    folder, model, inputs, _ = files
    out = tmp_path / "out"
    Store(out / "results").bind({"baseline": "f" * 64, "data": "e" * 64, "name": "someone-else"})
    code, err = run_cli(["study", "--model", str(model), "--inputs", str(inputs), "--out", str(out), "--smoke"],
                        capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"--out {out} holds another study's results ('someone-else'): baseline ffffffffffff" in err
    assert f"choose another --out (e.g. --out {out / 'mlp'})" in err
    assert not list((out / "results" / "rows").glob("*.json"))  # nothing measured


def test_a_study_on_a_constant_weight_graph_prints_no_runtime_warning_line(tmp_path):
    from optlab.testing.graphs import constant_weight_mlp_inputs, constant_weight_mlp_onnx

    model = constant_weight_mlp_onnx(tmp_path / "constant.onnx")
    inputs, calibration = tmp_path / "inputs.npz", tmp_path / "calibration.npz"
    np.savez(inputs, **constant_weight_mlp_inputs())
    np.savez(calibration, **constant_weight_mlp_inputs(seed=2))
    out = tmp_path / "out"
    proc = study_command(model, inputs, out, "--smoke", "--calibration", str(calibration),
                         "--recipe", "quantize(scheme=static-int8, runtime=onnxruntime)",
                         "--recipe", "quantize(scheme=dynamic-int8, runtime=onnxruntime)")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    printed = stdout + stderr
    for chatter in ("[W:onnxruntime", "Expected bias", "WARNING:root", "Warning:"):
        assert chatter not in printed, printed[-3000:]
    import pandas as pd

    results = pd.read_csv(out / "results.csv")
    assert results["warnings_count"].notna().all()  # counted for every candidate (zero or more)


def test_a_control_flow_graph_is_studied_end_to_end_with_batch_axis(tmp_path, capsys):
    """A state batched on axis 1, read inside `If` branches, the sample rate a constant: declared
    on the command line, the study runs and its notes name every batch axis."""
    import pandas as pd

    from optlab.testing.graphs import streaming_if_onnx, streaming_inputs

    model = streaming_if_onnx(tmp_path / "vad.onnx")
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **streaming_inputs(rows=24))
    out = tmp_path / "out"
    code = main(["study", "--model", str(model), "--inputs", str(inputs), "--batch-axis", "state=1",
                 "--batch-axis", "sr=none", "--smoke", "--out", str(out),
                 "--recipe", "quantize(scheme=fp16, runtime=onnxruntime)"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    results = pd.read_csv(out / "results.csv")
    assert set(results["status"]) == {"ok"}, results[["candidate", "status", "error"]]
    assert results.set_index("candidate").loc["baseline", "agreement"] == 1.0
    assert "baseline" in printed and "fp16" in printed


DECLARATIONS = [
    (["--batch-axis", "state"], "--batch-axis: 'state': write NAME=VALUE"),
    (["--batch-axis", "state=two"], "the axis is a number (0, 1, ...) or none for a constant"),
    (["--output-kind", "scores=boxes"], "the kind is one of classes, sequence, dense, values"),
]


@pytest.mark.parametrize(("extra", "message"), DECLARATIONS, ids=[" ".join(e) for e, _ in DECLARATIONS])
def test_bad_declarations_are_one_line(files, tmp_path, capsys, extra, message):
    folder, model, inputs, _ = files
    code, err = run_cli(["study", "--model", str(model), "--inputs", str(inputs), "--out", str(tmp_path / "out"),
                         *extra], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_errors_from_the_cli_name_the_flag_and_from_python_the_keyword(tmp_path, capsys):
    from optlab.models.user_models import from_onnx
    from optlab.testing.graphs import sequence_onnx

    model = sequence_onnx(tmp_path / "rec.onnx")  # scores (N, 8, 5): sequence or dense map?
    x = np.random.default_rng(0).normal(size=(16, 8, 6)).astype(np.float32)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=x)
    code, err = run_cli(["study", "--model", str(model), "--inputs", str(inputs), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "Declare it: --output-kind scores=sequence" in err and "output_kinds" not in err, err
    with pytest.raises(ValueError, match=r"Declare it: output_kinds=\{'scores': 'sequence'\}"):
        from_onnx(model, {"x": x})
    code, err = run_cli(["study", "--model", str(model), "--inputs", str(inputs), "--out", str(tmp_path / "o"),
                         "--output-kind", "scores=sequence", "--batch-axis", "x=7"], capsys)
    assert code == 2 and "--batch-axis x=7: give an axis in 0..2" in err, err


def test_a_degenerate_sample_is_said_in_one_line_at_wrap_time(tmp_path, capsys):
    from optlab.testing.graphs import sequence_onnx

    model = sequence_onnx(tmp_path / "rec.onnx")
    inputs = tmp_path / "blank.npz"
    np.savez(inputs, x=np.zeros((16, 8, 6), np.float32))  # every position scores 0: blank everywhere
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, x=np.zeros((4, 8, 6), np.float32))
    code = main(["study", "--model", str(model), "--inputs", str(inputs), "--calibration", str(calibration),
                 "--output-kind", "scores=sequence", "--smoke", "--out", str(tmp_path / "out"),
                 "--recipe", "compile(graph_level=basic)"])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "quality figures cannot separate candidates" in line]
    assert lines == ["optlab study: warning: on these inputs the model predicts blank (class 0) at every position "
                     "of 'scores': quality figures cannot separate candidates; give representative inputs"], err
    import pandas as pd

    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert results["degenerate_sample"].all()
    assert {"sequence_agreement", "identical_rate"} <= set(results.columns)
    assert "identical sequences" in (tmp_path / "out" / "report.html").read_text()
