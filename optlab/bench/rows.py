"""One benchmark row per candidate, produced by the study's own `run_task` (apply, measure,
evaluate, failures as error rows), so the benches and `Study` can never disagree on how a row
is made. The benches only add the few columns their tables print."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optlab.instruments.quality import reference
from optlab.study.executor import Task, TaskContext, run_task


def context(baseline: Any, data: Any, workload: Any, inputs: Any) -> TaskContext:
    """What every row of one bench run shares: the baseline and its test outputs, computed once."""
    return TaskContext(baseline=baseline, data=data, workload=workload, inputs=inputs,
                       baseline_outputs=reference(baseline, data))


def bench_row(shared: TaskContext, recipe: Any, workdir: Path, **columns: Any) -> dict[str, Any]:
    """`run_task`'s row for `recipe` (None: the baseline itself, marked "reference"), plus
    `build_s`, the candidate's `meta` as a dict, `throughput_b256_per_s` and `columns`."""
    row = {**columns, **run_task(shared, Task(recipe, fingerprint="bench", workdir=Path(workdir)))}
    row["meta"] = json.loads(row.pop("meta_json", None) or "{}")
    row["build_s"] = round(row.get("apply_s") or 0.0, 1)
    if recipe is None and row.get("status") == "ok":
        row["status"] = "reference"
    sweep = {point["batch_size"]: point for point in json.loads(row.get("sweep_json") or "[]")}
    row["throughput_b256_per_s"] = sweep.get(256, {}).get("throughput_per_s")
    return row
