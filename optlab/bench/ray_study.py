"""`python -m optlab.bench ray [--smoke] [--json PATH]`

The same 12-recipe study of the zoo's digits student run twice in one process: in process
(`InProcessExecutor`) and on a local Ray cluster (`RayExecutor`, one measurement slot, so its
candidates are timed one at a time as in process). It prints each run's wall time (the
cluster's start apart) and every candidate's p50 side by side, with their ratio: the point is
that moving a study onto Ray changes where it runs, not what it measures. Needs
`optlab[distributed]`. Both runs share this machine's cores with whatever else runs here.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from optlab.bench.render import Col, Layout, Renderer, missing, target, times
from optlab.data.datasets import load
from optlab.instruments.environment import environment, package_version
from optlab.instruments.latency import Workload
from optlab.models import zoo
from optlab.recipes.presets import ONNX_RECIPES
from optlab.recipes.recipe import Compile, Quantize
from optlab.study.options import RunOptions
from optlab.study.ray_executor import RayExecutor
from optlab.study.study import Study

COMMAND = "python -m optlab.bench ray"
THREADS = 1


def recipes(smoke: bool) -> list[Any]:
    """Twelve recipes (three in smoke): ONNX Runtime, OpenVINO and torch, each a different build."""
    every = [*ONNX_RECIPES, Compile(graph_level="disabled"), Compile(graph_level="extended"), Quantize("bf16"),
             Quantize("dynamic-int8"), Quantize("static-int8", runtime="onnxruntime", calibration="percentile")]
    return every[:3] if smoke else every


def workload(smoke: bool) -> Workload:
    return Workload.smoke(threads=THREADS, throughput_batch_sizes=(8,), memory=False, cold_start=False,
                          sweep_budget_s=1.0) if smoke else \
        Workload(threads=THREADS, batch_size=1, throughput_batch_sizes=(64,), memory=False, cold_start=False)


def run_both(smoke: bool, folder: Path, progress=lambda _line: None) -> tuple[pd.DataFrame, dict[str, float]]:
    """The study in process, then on Ray: the candidates side by side and the wall times (s)."""
    data = load("digits", smoke=smoke)
    model = zoo.get("digits", "student", smoke=smoke, data=data)
    chosen, load_ = recipes(smoke), workload(smoke)
    walls: dict[str, float] = {}
    started = time.perf_counter()
    here = Study(model, data, chosen, workload=load_, results_dir=folder / "in-process",
                 options=RunOptions(progress=False)).run()
    walls["in_process_s"] = time.perf_counter() - started
    progress(f"  in process: {len(here)} rows in {walls['in_process_s']:.1f}s")
    with RayExecutor() as executor:
        started = time.perf_counter()
        executor.start()
        walls["ray_start_s"] = time.perf_counter() - started
        started = time.perf_counter()
        on_ray = Study(model, data, chosen, workload=load_, results_dir=folder / "ray",
                       options=RunOptions(executor=executor, progress=False)).run()
        walls["ray_s"] = time.perf_counter() - started
    progress(f"  on Ray: {len(on_ray)} rows in {walls['ray_s']:.1f}s (+{walls['ray_start_s']:.1f}s cluster start)")
    side = pd.DataFrame({"candidate": here["candidate"], "status": here["status"],
                         "ray_status": on_ray["status"], "p50_ms": here["p50_ms"], "ray_p50_ms": on_ray["p50_ms"],
                         "quality": here["quality"], "ray_quality": on_ray["quality"]})
    side["ray_over_in_process"] = side["ray_p50_ms"] / side["p50_ms"]
    return side, walls


LAYOUT = Layout((
    Col("candidate", "candidate", 88, "<"),
    Col("status", "here", 6, before=" "), Col("ray_status", "ray", 6, before=" "),
    Col("p50_ms", "p50 ms here", 12, spec=".4f", before=" "),
    Col("ray_p50_ms", "p50 ms ray", 11, spec=".4f", before=" "),
    Col("ray_over_in_process", "ray/here", 9, text=lambda r: times(r.get("ray_over_in_process")), before=" "),
    Col("quality", "quality", 8, spec=".4f", before=" "),
    Col("ray_quality", "ray q.", 8, spec=".4f", before=" "),
))


def targets(side: pd.DataFrame, walls: dict[str, float]) -> list[dict[str, Any]]:
    """Not judged (the issue sets no figure): the median p50 ratio and the wall-time ratio, said plainly."""
    ratios = side["ray_over_in_process"].dropna()
    median = float(ratios.median()) if len(ratios) else None
    same = bool((side["status"] == side["ray_status"]).all() and
                ((side["quality"] - side["ray_quality"]).abs().fillna(0) < 1e-9).all())
    wall = walls["ray_s"] / walls["in_process_s"] if walls.get("in_process_s") else None
    return [
        target("per-candidate p50 on Ray / in process (median)", median, None, COMMAND,
               f"p50 on Ray over p50 in process, median over {len(ratios)} candidates: {times(median)} "
               f"(statuses and qualities {'identical' if same else 'DIFFER'})"),
        target("study wall time on Ray / in process", wall, None, COMMAND,
               f"wall time on Ray {walls['ray_s']:.1f}s vs in process {walls['in_process_s']:.1f}s: {times(wall)} "
               f"(one measurement slot: candidates run one at a time; the cluster's start, "
               f"{walls['ray_start_s']:.1f}s, is apart; the in-process run came first and paid this "
               f"process's first imports, the Ray workers paid their own)"),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[1])
    parser.add_argument("--smoke", action="store_true", help="three recipes and the smoke workload")
    parser.add_argument("--json", default=None, help="also write the tables as JSON to this path")
    args = parser.parse_args(argv)
    out = Renderer("ray", COMMAND + (" --smoke" if args.smoke else ""))
    env = environment()
    out.say(f"CPU: {env.cpu_model or platform.machine()}, flags: {env.cpu_flags or 'none of the speed set'}, "
            f"{env.cores} cores; threads={THREADS}; ray {package_version('ray')}, onnxruntime "
            f"{env.onnxruntime_version}, torch {env.torch_version}")
    with tempfile.TemporaryDirectory(prefix="optlab-bench-ray-") as tmp:
        side, walls = run_both(args.smoke, Path(tmp), out.progress)
    out.table("candidates", LAYOUT, side.to_dict("records"))
    errors = side[(side["status"] != "ok") | (side["ray_status"] != "ok")]
    if len(errors):
        out.say(f"not ok in either run: {', '.join(errors['candidate'])}")
    out.say("\nfigures (ratios from the same run; others share these cores, so expect noise):")
    out.targets(targets(side, walls), indent="  ")
    out.write_json(args.json)
    return 0 if not missing(walls.get("ray_s")) else 1
