"""The GPU language-model reference rows (`python -m optlab.bench gpu-llm`, recorded on an H100) load
as labelled reference rows with finite figures, and the bench says in one line that it needs CUDA."""
from __future__ import annotations

import math

import pandas as pd

from optlab.data import reference
from optlab.study.store import reference_rows

LABEL = "recorded on an H100"
SHOWN = ["candidate", "status", "goodput_per_s", "ttft_p99_ms", "tpot_p99_ms", "output_tokens_per_s", "perplexity",
         "agreement", "noisy", "notes"]  # the columns notebook 08 shows for its own candidates
FIGURES = ["goodput_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "output_tokens_per_s",
           "perplexity", "agreement", "peak_gpu_memory_mb", "decode_step_p50_ms", "size_mb"]


def test_the_h100_rows_load_with_their_machine_and_finite_figures():
    assert "llm" in reference.available()["h100"]
    rows = pd.DataFrame(reference_rows(reference.recorded("h100", "llm"), label=LABEL))
    assert len(rows) >= 3 and set(SHOWN) <= set(rows.columns)
    assert (rows["status"] == "reference").all() and (rows["source"] == LABEL).all()
    assert rows["candidate"].str.endswith(f"[{LABEL}]").all()
    assert rows["gpu_name"].str.contains("H100").all() and rows["machine_label"].str.contains("H100").all()
    assert (rows["device"] == "cuda").all() and rows["torch_version"].notna().all()
    for column in FIGURES:
        values = rows[column].tolist()
        assert all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values), (column, values)
    # the quality column is comparable with 08's: the same windows, the CPU fp32 target's perplexity beside it
    assert ((rows["perplexity"] - rows["baseline_quality"]).abs() < 0.01 * rows["baseline_quality"]).all()
    names = set(rows["candidate"].str.replace(f" [{LABEL}]", "", regex=False))
    assert {"GPU eager fp32", "GPU eager bf16", "GPU bf16, static KV cache + torch.compile"} <= names


def test_without_cuda_the_bench_says_so_in_one_line_and_exits_0(monkeypatch, capsys, tmp_path):
    from optlab.bench import gpu_llm
    from optlab.instruments import gpu

    monkeypatch.setattr(gpu, "cuda_status", lambda: (False, "needs CUDA: torch sees no CUDA device"))
    assert gpu_llm.main(["--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [f"{gpu_llm.COMMAND}: not available here: needs CUDA: torch sees no CUDA device"]
    assert not (tmp_path / "out").exists()


def test_the_machine_key_comes_from_the_device_name():
    from optlab.bench.gpu_llm import machine_key

    assert machine_key("NVIDIA H100 80GB HBM3") == "h100"
    assert machine_key("NVIDIA H200") == "h200"
    assert machine_key(None) == "cpu"

