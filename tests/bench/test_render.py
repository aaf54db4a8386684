"""The bench renderer prints what benches return (tables, lines, targets) and writes it as JSON;
benches' tables and targets are data. No timing target here: the figures come from tiny runs or
are made up, and only their shape and wording are checked."""
from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from optlab.bench import rows as rows_module
from optlab.bench import techniques, zoo
from optlab.bench.render import TARGET_COLUMNS, Col, Layout, Renderer, target
from optlab.instruments.latency import Workload
from optlab.models.runtimes import QUIET_LOGGERS, quiet_torch_logs
from optlab.recipes.recipe import Compile


def test_layout_aligns_like_an_f_string_and_shows_missing_cells():
    layout = Layout((Col("name", "name", 8, "<"), Col("value", "value", 9, spec=".2f"),
                     Col("count", "count", 8, spec=",", before="  ")))
    assert layout.head() == f"{'name':<8}{'value':>9}  {'count':>8}"
    assert layout.line({"name": "a", "value": 1.234, "count": 12345}) == f"{'a':<8}{1.234:>9.2f}  {'12,345':>8}"
    assert layout.line({"name": "b", "value": float("nan"), "count": None}) == f"{'b':<8}{'-':>9}  {'-':>8}"


def test_renderer_streams_rows_and_keeps_everything_for_json(tmp_path: Path):
    printed = io.StringIO()
    out = Renderer("demo", "python -m optlab.bench demo", out=printed)
    layout = Layout((Col("x", "x", 4), Col("y", "y", 6, spec=".1f")))
    seen = []

    def rows():
        for x in range(3):
            seen.append(printed.getvalue().count("\n"))  # lines printed before this row is made
            yield {"x": x, "y": x / 2 if x else float("nan")}

    frame = out.table("numbers", layout, rows())
    assert seen == [1, 2, 3]  # the header, then each row as soon as it arrived
    out.progress("working")
    out.say("a sentence")
    table = out.targets([target("x over y", float("inf"), None, "cmd", "x over y: n/a"),
                         target("speed", 2.0, True, "cmd", "speed 2.00x MET")], indent="  ")
    assert list(table.columns) == list(TARGET_COLUMNS) and table["met"].tolist() == [None, True]
    assert list(frame["x"]) == [0, 1, 2]
    text = printed.getvalue().splitlines()
    assert text == ["   x     y", "   0     -", "   1   0.5", "   2   1.0", "working", "a sentence",
                    "  x over y: n/a", "  speed 2.00x MET"]
    out.write_json(tmp_path / "out.json")
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["lines"] == ["a sentence"]  # progress lines are not figures
    assert written["tables"]["numbers"][0]["y"] is None  # NaN never reaches JSON as NaN
    assert written["targets"][0]["figure"] is None and written["targets"][1]["met"] is True


def test_a_frame_inside_a_row_reaches_json_as_records(tmp_path: Path):
    out = Renderer("demo", out=io.StringIO())
    curve = pd.DataFrame({"offered_per_s": [400.0, 800.0], "p99_ms": [1.5, float("nan")], "passed": [True, False]})
    out.keep("rounds", pd.DataFrame([{"deployment": "optimized", "curve": curve}]))
    out.write_json(tmp_path / "out.json")
    written = json.loads((tmp_path / "out.json").read_text())["tables"]["rounds"][0]["curve"]
    assert written == [{"offered_per_s": 400.0, "p99_ms": 1.5, "passed": True},
                       {"offered_per_s": 800.0, "p99_ms": None, "passed": False}]


def test_frame_prints_missing_figures_as_not_available():
    printed = io.StringIO()
    Renderer("demo", out=printed).frame("t", pd.DataFrame({"a": [1.0, np.nan], "error": ["x", "y"]}), drop=["error"])
    assert "NaN" not in printed.getvalue() and "n/a" in printed.getvalue() and "error" not in printed.getvalue()


def test_candidates_section_prints_table_errors_and_targets_in_order():
    printed = io.StringIO()
    out = Renderer("demo", out=printed)
    table = pd.DataFrame([{"dataset": "d", "candidate": "a", "status": "ok", "error": None, "x": 1.0},
                          {"dataset": "d", "candidate": "b", "status": "error", "error": "boom", "x": None}])
    rows = [{"dataset": "d", "candidate": "a"}, {"dataset": "d", "candidate": "b"}]
    out.candidates("CPU: demo", rows, table, [target("t", 1.5, True, "cmd", "t: 1.50x MET")])
    text = printed.getvalue()
    assert text.index("CPU: demo") < text.index("candidate") < text.index("errors:") < text.index("  t: 1.50x MET")
    assert "boom" in text.split("errors:")[1] and "boom" not in text.split("errors:")[0]
    assert set(out.tables) == {"rows", "candidates"} and len(out.tables["rows"]) == 2
    assert [r["target"] for r in out.target_rows] == ["t"]
    quiet = io.StringIO()
    Renderer("demo", out=quiet).candidates("CPU: demo", rows[:1], table.iloc[:1], [])
    assert "errors:" not in quiet.getvalue()


def test_zoo_targets_are_a_table_with_the_printed_sentences():
    rows = [{"dataset": "intents", "model": "teacher", "test": 0.95, "low": 0.94, "high": 0.96, "train_s": 10.0,
             "load": "load average 1.00"},
            {"dataset": "intents", "model": "student", "test": 0.90, "low": 0.89, "high": 0.91},
            {"dataset": "intents", "model": "bag-of-words logreg", "test": 0.80, "low": 0.79, "high": 0.81}]
    full = zoo.verdict(rows, smoke=False)
    assert [t["met"] for t in full] == [True, True, True]
    assert full[0]["sentence"] == ("teacher - student: +5.0 points (target >= 3); intervals apart -> MET")
    smoke = zoo.verdict(rows, smoke=True)
    assert smoke[0]["met"] is None and smoke[0]["sentence"].endswith("(the target is for the full setting)")


def test_techniques_table_and_targets_from_a_tiny_real_run(tiny_digits, tmp_path):
    """Two real rows (the baseline and ONNX Runtime fp32) made by the bench's own row maker on a tiny
    model, then the printed table and the targets table built from them."""
    model, data = tiny_digits
    from optlab.models import zoo as model_zoo

    workload = Workload.smoke(throughput_batch_sizes=(256,), threads=1, memory=False, cold_start=False)
    shared = rows_module.context(model_zoo.baseline(model, name="digits-baseline"), data, workload, data.test.inputs)
    rows = [rows_module.bench_row(shared, recipe, tmp_path, dataset="digits", model_source="test")
            for recipe in (None, Compile("onnxruntime"))]
    table = techniques.table(rows)
    assert table["candidate"].tolist() == ["digits-baseline", Compile("onnxruntime").name]
    assert table["status"].tolist() == ["reference", "ok"] and table["size_ratio"].iloc[0] == 1.0
    found = techniques.targets(table)
    assert all(list(t) == list(TARGET_COLUMNS) for t in found)
    ort = next(t for t in found if "ORT fp32 vs eager fp32" in t["target"])
    assert ort["figure"] > 0 and ort["met"] in (True, False)  # measured: judged, whatever the load
    bf16 = next(t for t in found if "torch bf16" in t["target"])
    assert bf16["figure"] is None and bf16["met"] is None and bf16["sentence"].endswith("n/a")  # not measured
    printed = io.StringIO()
    techniques.show(Renderer("techniques", out=printed), rows, table)
    assert "targets (ratios from the same run" in printed.getvalue() and "NaN" not in printed.getvalue()


def test_quiet_torch_logs_restores_levels_and_warning_filters():
    logger = logging.getLogger(QUIET_LOGGERS[0])
    before, filters = logger.level, list(warnings.filters)
    logger.setLevel(logging.INFO)
    try:
        with quiet_torch_logs():
            assert logging.getLogger(QUIET_LOGGERS[0]).level == logging.ERROR
            with warnings.catch_warnings(record=True) as caught:
                warnings.warn("Calling register_constant() on Enum subclasses is deprecated", UserWarning,
                              stacklevel=1)
            assert not caught
        assert logger.level == logging.INFO and warnings.filters == filters
    finally:
        logger.setLevel(before)


def test_gpu_candidate_table_and_targets_render_without_a_gpu():
    """The GPU bench's table and targets from made-up rows: the rendering needs no GPU."""
    from optlab.bench import gpu

    timed = dict(batch1_resident_p50_ms=0.3, batch1_host_p50_ms=0.6, peak_allocated_mb=10.0, agreement=1.0,
                 build_s=0.1)
    rows = [{"candidate": gpu.FP32, "resident_per_s": 1e6, "host_per_s": 5e5, **timed},
            {"candidate": gpu.BF16_COMPILE, "resident_per_s": 4e6, "host_per_s": 1e6, **timed},
            {"candidate": "ondevice(device=cuda, precision=fp8)", "skipped": "needs compute capability 8.9"}]
    printed, report = io.StringIO(), {}
    out = Renderer("gpu", out=printed)
    gpu.show_candidates(out, "bids", iter(rows), report)
    gpu.show_targets(out, report["bids_candidates"], report)
    text = printed.getvalue()
    assert "skipped: needs compute capability 8.9" in text and "4,000,000" in text and "nan" not in text.lower()
    assert report["targets"]["bf16_compile_vs_fp32_eager_resident"] == 4.0
    assert report["targets"]["bf16_compile_vs_fp32_eager_host"] == 2.0
    assert "4.00x with inputs resident (target >= 3x: met); 2.00x from host memory" in text


def test_pruning_targets_say_not_available_for_a_ratio_not_measured():
    from optlab.bench import pruning

    base = dict(dataset="digits", metric="accuracy", drop_ci_low=0.0, drop_ci_high=0.01, sparsity=np.nan,
                size_ratio=1.0, params_ratio=1.0, speedup_b1=1.0, build_s=1.0)
    table = pd.DataFrame([{**base, "candidate": "digits-teacher", "status": "reference", "quality": 0.97,
                           "drop": 0.0, "speedup_b256": np.nan},
                          {**base, "candidate": "prune(sparsity=0.5, structured=True)", "status": "ok",
                           "quality": 0.96, "drop": 0.01, "params_ratio": 0.25, "speedup_b256": np.nan}])
    found = pruning.targets(table, smoke=True)
    structured = next(t for t in found if "structured=True" in t["target"])
    assert structured["met"] is None and structured["figure"] is None
    assert "throughput b256 n/a (>= 1.6x)" in structured["sentence"] and structured["sentence"].endswith("n/a")
    assert not any("nan" in t["sentence"] for t in found)


def test_transformer_benches_render_their_tables_and_targets():
    """The --widths and --bucketing sections and the default targets from made-up figures."""
    from optlab.bench import bucketing, transformers, widths

    row = {"width": 64, "params": 123456, "train_s": 12.0, "fp32_accuracy": 0.9, "fp32_rows_s": 500.0,
           "matmul_share": 0.4, "matmul_int8_x": 1.5, "rest_int8_x": 0.9, "profile": "MatMul 40%",
           "dynamic_ratio": 0.9, "static_ratio": 1.4, "dynamic_drop_pts": -0.1, "static_drop_pts": -0.3,
           "dynamic_worst": "length=long (+0.5)", "static_worst": "-"}
    printed = io.StringIO()
    out = Renderer("transformers", out=printed)
    widths.show_widths(out, iter([row]), "avx2")
    assert out.target_rows[-1]["met"] is True and "int8 pays most at width 64: 1.40x" in printed.getvalue()
    frames = {"tokens": pd.DataFrame([{"policy": p, "policy_name": p, "tokens_per_request": 100.0, "calls": 10,
                                       "padding_share": 0.5} for p in ("none", "dynamic", "bucketed")]),
              "capacity": pd.DataFrame([{"policy": p, "policy_name": p, "round": r, "requests_per_s": v}
                                        for r in range(2) for p, v in (("none", 10.0), ("dynamic", 20.0),
                                                                       ("bucketed", 30.0))]),
              "sla": pd.DataFrame([{"policy": p, "policy_name": p, "round": 0, "throughput_per_s": v,
                                    "p99_ms": 9.0, "probes": 4, "notes": ""} for p, v in (("dynamic", 0.0),
                                                                                          ("bucketed", 50.0))])}
    result = {"sla_ms": 250.0, "edges": (16, 32), "threads": 2, "requests": 10, "texts_per_request": 3.0,
              "length_p50": 20.0, "length_p90": 60.0, "length_max": 128, "bucket_shares": [0.5, 0.3, 0.2], **frames}
    bucketing.show_bucketing(out, result, "avx2")
    text = printed.getvalue()
    assert "capacity bucketed / dynamic: 1.50x" in text
    assert "not available (dynamic met the SLA at no rate)" in text and "nan" not in text.lower()
    candidates = pd.DataFrame([{"candidate": c, "accuracy": 0.9, "b1_p50_ms": ms, "b32_rows_per_s": rows,
                                "worst_length_slice": "-"} for c, ms, rows in
                               (("torch eager fp32", 2.0, 100.0), ("O2 fp32", 1.0, 200.0),
                                ("O2 dynamic int8", 1.0, 300.0), ("O2 static int8", 1.0, 200.0))])
    found = transformers.targets({"candidates": candidates, "flags": ["avx2"], "preset": "avx2"})
    assert [t["met"] for t in found] == [True, True, False] and found[0]["figure"] == 2.0
