"""measure(): latency, sweep, size, memory and cold start of tiny real models."""
import json
import math
import re
import sys
import textwrap

import numpy as np
import pytest
import torch

from optlab.instruments.environment import GPU_FIELDS
from optlab.instruments.latency import Measurement, MeasurementError, Workload, make_batches, measure, torch_threads
from optlab.models.candidate import Candidate

FAST = Workload.smoke(memory=False, cold_start=False, throughput_batch_sizes=(1, 4), n_boot=50)

LOADER = textwrap.dedent('''
    import onnxruntime as ort

    def load(path, threads=1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda batch: session.run(None, {"x": batch["x"]})[0]

    def broken(path):
        raise RuntimeError("cannot open " + path)
''')


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3).eval()


def torch_candidate(model, name="linear", **kwargs):
    def predict(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch["x"])).numpy()
    return Candidate(name, predict, model=model, **kwargs)


def inputs(rows=10):
    return {"x": np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)}


@pytest.fixture(scope="module")
def onnx_candidate(linear, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort")
    path = folder / "linear.onnx"
    torch.onnx.export(linear, (torch.zeros(1, 4),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    (folder / "tiny_ort_loader.py").write_text(LOADER)
    sys.path.insert(0, str(folder))
    import tiny_ort_loader
    yield Candidate("linear-ort", tiny_ort_loader.load(str(path)), runtime="onnxruntime", artifact_path=path,
                    loader="tiny_ort_loader:load", loader_options={"threads": 1}, meta={"threads": 1})
    sys.path.remove(str(folder))


def test_measure_reports_percentiles_sweep_size_and_environment(linear):
    m = measure(torch_candidate(linear), inputs(), FAST)
    row = m.to_row()
    assert m.complete and row["samples"] == len(m.samples_ns) > 0
    assert row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["p50_ci_low_ms"] <= row["p50_ms"] <= row["p50_ci_high_ms"]
    assert row["batch_size"] == 1 and row["threads"] == FAST.threads and row["warmup"] == FAST.warmup
    assert row["param_count"] == 15 and row["zero_fraction"] == 0.0 and row["size_bytes"] is None
    sweep = {point["batch_size"]: point for point in json.loads(row["sweep_json"])}
    assert sorted(sweep) == [1, 4] and sweep[4]["p50_ms"] <= sweep[4]["p99_ms"]
    assert row["throughput_per_s"] == max(sweep[1]["throughput_per_s"], sweep[4]["throughput_per_s"])
    assert row["cpu_model"] and row["cores"] >= 1 and row["torch_version"].startswith(torch.__version__[:4])
    assert row["peak_rss_mb"] is None and row["cold_start_ms"] is None
    assert "memory" not in row["notes"]
    assert all(not isinstance(v, (list, dict, np.ndarray)) for v in row.values())


def test_measurement_json_round_trip_keeps_raw_samples(linear):
    m = measure(torch_candidate(linear), inputs(), FAST)
    back = Measurement.from_json(m.to_json())
    assert back.samples_ns == m.samples_ns and back.sweep[1].samples_ns == m.sweep[1].samples_ns
    assert back.to_row() == m.to_row()
    json.dumps(m.to_row())


def test_cold_start_and_memory_of_an_onnxruntime_candidate_without_torch(onnx_candidate):
    m = measure(onnx_candidate, inputs(), Workload.smoke(n_boot=50, throughput_batch_sizes=(1, 64)))
    row = m.to_row()
    assert row["cold_start_repeats"] == 1 and row["cold_start_imports_torch"] is False
    parts = [row[f"cold_start_{p}_ms"] for p in ("startup", "import", "load", "first_call")]
    assert all(p > 0 for p in parts) and sum(parts) <= row["cold_start_ms"] * 1.01
    assert row["peak_rss_mb"] > row["start_rss_mb"] > 0
    assert row["size_bytes"] == onnx_candidate.size_bytes > 0 and row["param_count"] == 15
    assert len(m.cold.runs) == 1


def test_memory_only_run_has_no_cold_start_figures(onnx_candidate):
    row = measure(onnx_candidate, inputs(), Workload.smoke(n_boot=50, cold_start=False)).to_row()
    assert row["peak_rss_mb"] > 0 and row["cold_start_ms"] is None and row["cold_start_repeats"] == 0


def test_candidate_without_loader_skips_memory_with_a_note(linear):
    m = measure(torch_candidate(linear), inputs(), Workload.smoke(n_boot=50))
    assert m.cold is None and "no loader" in m.to_row()["notes"]


def test_failing_loader_keeps_latency_and_names_candidate_and_phase(onnx_candidate):
    broken = Candidate("bad-loader", onnx_candidate.predict_fn, artifact_path=onnx_candidate.artifact_path,
                       loader="tiny_ort_loader:broken")
    m = measure(broken, inputs(), Workload.smoke(n_boot=50))
    row = m.to_row()
    assert row["p50_ms"] > 0 and row["cold_start_ms"] is None and row["peak_rss_mb"] is None
    assert re.search(r"bad-loader.*loading the artifact.*cannot open", m.cold_start_error)
    assert "memory and cold start failed" in row["notes"]
    assert Measurement.from_dict(m.to_dict()).cold_start_error == m.cold_start_error


def test_requests_list_uses_real_batches_when_batch_size_is_none(linear):
    requests = [inputs(2), inputs(3)]
    m = measure(torch_candidate(linear), requests, Workload.smoke(batch_size=None, memory=False, cold_start=False))
    assert m.batch_size is None and m.rows_per_call == 2.5


def test_make_batches_cycles_rows_and_pads_text_requests():
    batches = make_batches({"x": np.arange(3)[:, None]}, 5)
    assert [b["x"][:, 0].tolist() for b in batches] == [[0, 1, 2, 0, 1]]
    short = {"input_ids": np.array([[5, 6]]), "attention_mask": np.array([[1, 1]])}
    long = {"input_ids": np.array([[7, 8, 9, 0]]), "attention_mask": np.array([[1, 1, 1, 0]])}
    first, second = make_batches([short, long], 1)
    assert first["input_ids"].tolist() == [[5, 6]] and second["input_ids"].tolist() == [[7, 8, 9]]
    assert len(make_batches({"x": np.zeros((100, 1))}, 2, max_batches=8)) == 8


@pytest.mark.parametrize("bad", [{}, [], [{}], {"x": np.zeros((0, 4), np.float32)}])
def test_empty_inputs_are_a_clear_error(linear, bad):
    with pytest.raises(MeasurementError, match="linear.*(empty inputs|0 rows)"):
        measure(torch_candidate(linear), bad, FAST)


def failing(name, predict):
    return Candidate(name, predict)


def test_predict_that_raises_names_the_candidate():
    def predict(batch):
        raise RuntimeError("weights missing")
    with pytest.raises(MeasurementError, match="exploder: predict raised RuntimeError: weights missing"):
        measure(failing("exploder", predict), inputs(), FAST)


def test_nan_output_is_an_error():
    with pytest.raises(MeasurementError, match="nan-model.*NaN"):
        measure(failing("nan-model", lambda b: np.full((len(b["x"]), 3), np.nan)), inputs(), FAST)


@pytest.mark.parametrize("output", [np.zeros((2, 3)), np.float32(1.0)])
def test_wrong_batch_dimension_is_an_error(output):
    with pytest.raises(MeasurementError, match="shaper: predict returned shape"):
        measure(failing("shaper", lambda b: output), inputs(), FAST)


def test_keyboard_interrupt_returns_an_incomplete_measurement(linear):
    inner = torch_candidate(linear).predict_fn
    calls = {"n": 0}

    def predict(batch):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt
        return inner(batch)

    m = measure(Candidate("interrupted", predict), inputs(), Workload.smoke(warmup=5, min_samples=100, max_samples=1000,
                                                                              budget_s=60, n_boot=50))
    assert not m.complete and m.stop_reason == "interrupted" and len(m.samples_ns) == 20
    assert m.to_row()["samples"] == 20 and "interrupted during latency" in m.to_row()["notes"]
    assert m.sweep == []


def test_interrupt_during_the_sweep_keeps_the_latency(linear):
    inner = torch_candidate(linear).predict_fn

    def predict(batch):
        if len(batch["x"]) == 4:
            raise KeyboardInterrupt
        return inner(batch)

    m = measure(Candidate("sweep-stop", predict), inputs(), FAST)
    assert not m.complete and m.latency is not None and [p.batch_size for p in m.sweep] == [1]


def test_torch_threads_are_set_and_restored(linear):
    before = torch.get_num_threads()
    seen = []
    measure(Candidate("t", lambda b: (seen.append(torch.get_num_threads()), b["x"])[1]), inputs(),
            Workload.smoke(threads=1, memory=False, cold_start=False, n_boot=50))
    assert set(seen) == {1} and torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_workload_validation_and_smoke():
    smoke = Workload.smoke()
    assert smoke.cold_start_repeats == 1 and smoke.budget_s < Workload().budget_s
    assert Workload().threads >= 1 and Workload(throughput_batch_sizes=[2, 4]).throughput_batch_sizes == (2, 4)
    assert Workload().to_dict()["throughput_batch_sizes"] == [1, 32, 256]
    for bad in (dict(batch_size=0), dict(max_samples=5, min_samples=10), dict(budget_s=0),
                dict(throughput_batch_sizes=(1, -2)), dict(warmup=-1), dict(threads=0)):
        with pytest.raises(ValueError, match="Workload"):
            Workload(**bad)


def test_row_keys_are_stable(linear):
    row = measure(torch_candidate(linear), inputs(), FAST).to_row()
    expected = {"candidate", "complete", "stop_reason", "batch_size", "rows_per_call", "threads", "warmup",
                "samples", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "min_ms", "mean_ms", "std_ms",
                "p50_ci_low_ms", "p50_ci_high_ms", "p99_ci_low_ms", "p99_ci_high_ms", "noisy",
                "throughput_per_s", "throughput_batch_size", "size_bytes", "size_mb", "param_count",
                "zero_fraction", "peak_rss_mb", "start_rss_mb", "cold_start_ms", "cold_start_min_ms",
                "cold_start_max_ms", "cold_start_startup_ms", "cold_start_import_ms", "cold_start_load_ms",
                "cold_start_first_call_ms", "cold_start_repeats", "cold_start_imports_torch", "cpu_model",
                "cpu_flags", "cores", "logical_cores", "torch_version", "onnxruntime_version", "python_version",
                "platform", "device", "gpu_name", "measured_at", "notes", "busy_other_cpu_share", "cpu_steal_share",
                "busy_ray_idle_cpu_share",
                "repeat_p50_ratio", "skipped_batch_sizes", "sweep_json", *GPU_FIELDS}
    assert set(row) == expected
    assert [point["batch_size"] for point in json.loads(row["sweep_json"])] == [1, 4]
    assert not math.isnan(row["p50_ms"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_candidate_is_synchronised(linear):
    model = torch.nn.Linear(4, 3).cuda().eval()

    def predict(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch["x"]).cuda()).cpu().numpy()

    m = measure(Candidate("cuda-linear", predict, device="cuda"), inputs(), FAST)
    assert m.complete and m.env.device == "cuda" and m.env.gpu_name


def test_importing_the_instruments_stays_light():
    import subprocess

    code = ("import sys, optlab.instruments.latency, optlab.instruments.quality, optlab.instruments.coldstart; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'sklearn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def sleepy(seconds_per_row):
    """A candidate whose call costs `seconds_per_row` per row (sleeping: no CPU used)."""
    import time

    def predict(batch):
        time.sleep(seconds_per_row * len(batch["x"]))
        return batch["x"][:, :3]
    return Candidate("sleepy", predict)


def test_sweep_skips_batch_sizes_whose_call_costs_too_much_of_the_budget():
    workload = Workload.smoke(memory=False, cold_start=False, throughput_batch_sizes=(1, 8, 256), sweep_budget_s=0.2,
                              budget_s=0.1, min_samples=5, n_boot=50)
    m = measure(sleepy(0.001), inputs(300), workload)
    assert [p.batch_size for p in m.sweep] == [1, 8] and m.skipped_batch_sizes == [256]
    row = m.to_row()
    assert row["skipped_batch_sizes"] == "256" and m.at_batch(256) is None and m.at_batch(8) is not None
    assert "throughput at batch 256 skipped" in row["notes"] and "sweep_budget_s" in row["notes"]


def test_a_deadline_shortens_the_latency_loop_and_skips_the_sweep(linear):
    import time

    m = measure(torch_candidate(linear), inputs(), Workload.smoke(budget_s=5, sweep_budget_s=5, n_boot=50, memory=False,
                                                                  cold_start=False),
                deadline=time.monotonic() + 1.0)
    assert m.complete and m.latency is not None and m.sweep == [] and m.skipped_batch_sizes == [1, 8]
    assert "shortened" in m.to_row()["notes"] and "time limit leaves" in m.to_row()["notes"]


def test_a_cpu_hog_in_another_process_makes_the_row_noisy(linear):
    import os
    import subprocess
    import time

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)  # let them start spinning
        m = measure(torch_candidate(linear), inputs(), Workload.smoke(budget_s=1.0, min_samples=100_000,
                                                                      max_samples=200_000, memory=False,
                                                                      cold_start=False, n_boot=50))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    row = m.to_row()
    assert row["busy_other_cpu_share"] > 0.25 and row["noisy"] is True
    assert "other processes used" in row["notes"]
