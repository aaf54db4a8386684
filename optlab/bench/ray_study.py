"""`python -m optlab.bench ray [--smoke] [--json PATH]`

The same 12-recipe study of the zoo's digits student run three times in one process: in process
(`InProcessExecutor`) and on a local Ray cluster of one node (`RayExecutor()`, one measurement
slot, so its candidates are timed one at a time as in process), these two interleaved one
candidate at a time with the order alternating, then in one go on two local nodes
(`RayExecutor(nodes=2)`: Ray's test-cluster utility, each node on its own half of the cores
with one slot). It prints each run's wall time (the clusters' start apart), every candidate's
p50 side by side with the ratio to in process, whether any two measurements overlapped in time
on one node (from the rows' slot timestamps), and a scaling model from the measured
per-candidate build and measure seconds. The point: moving a study onto Ray changes where it
runs, not what it measures. On one host the two nodes share the machine (memory, caches, other
people's load), so the two-node run checks the mechanism, not a multi-machine speed-up. Needs
`optlab[distributed]`. All runs share this machine's cores with whatever else runs here.
"""
from __future__ import annotations

import argparse
import math
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
TWO_NODE_COLUMNS = ("candidate", "status", "node_id", "pinned_cores", "slot_started_at", "slot_ended_at",
                    "apply_s", "measure_s", "evaluate_s", "p50_ms")
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


def _study(model, data, chosen, load_, folder: Path, executor=None) -> tuple[pd.DataFrame, float]:
    started = time.perf_counter()
    rows = Study(model, data, chosen, workload=load_, results_dir=folder,
                 options=RunOptions(executor=executor, progress=False)).run()
    return rows, time.perf_counter() - started


def _ms(value: Any) -> str:
    return "not measured" if missing(value) else f"{value:.4f} ms"


def interleaved(model, data, chosen, load_, folder: Path, executor: RayExecutor, walls: dict[str, float],
                progress=lambda _line: None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """In process and on Ray one candidate at a time, alternating which goes first (the baseline,
    then each recipe: a study of one more recipe in the same folder runs only the new one), so
    run order and the machine's changing load fall on both alike. Each wall time is the sum of its
    steps (every step pays a Study's setup, the same on both sides)."""
    walls["in_process_s"] = walls["ray_s"] = 0.0
    here = on_ray = pd.DataFrame()
    for step in range(len(chosen) + 1):
        sides = [("in_process_s", None, folder / "in-process"), ("ray_s", executor, folder / "ray")]
        for key, runner, where in sides if step % 2 == 0 else sides[::-1]:
            rows, seconds = _study(model, data, chosen[:step], load_, where, runner)
            walls[key] += seconds
            here, on_ray = (rows, on_ray) if runner is None else (here, rows)
        progress(f"  {here['candidate'].iloc[-1]}: p50 in process {_ms(here['p50_ms'].iloc[-1])}, "
                 f"on Ray {_ms(on_ray['p50_ms'].iloc[-1])}")
    return here, on_ray


def run_all(smoke: bool, folder: Path, progress=lambda _line: None) -> tuple[pd.DataFrame, dict[str, float],
                                                                             pd.DataFrame]:
    """The study in process and on one local Ray node, interleaved per candidate, then on two local
    nodes in one go: the candidates side by side, the wall times (s), and the two-node run's rows
    (node and slot timestamps per candidate)."""
    data = load("digits", smoke=smoke)
    model = zoo.get("digits", "student", smoke=smoke, data=data)
    chosen, load_ = recipes(smoke), workload(smoke)
    walls: dict[str, float] = {}
    with RayExecutor() as one:
        started = time.perf_counter()
        one.start()
        walls["ray_start_s"] = time.perf_counter() - started
        here, on_ray = interleaved(model, data, chosen, load_, folder, one, walls, progress)
    progress(f"  in process: {len(here)} rows in {walls['in_process_s']:.1f}s; on Ray, one node: {len(on_ray)} rows "
             f"in {walls['ray_s']:.1f}s (+{walls['ray_start_s']:.1f}s cluster start)")
    with RayExecutor(nodes=2) as two_nodes:
        started = time.perf_counter()
        two_nodes.start()
        walls["two_nodes_start_s"] = time.perf_counter() - started
        two, walls["two_nodes_s"] = _study(model, data, chosen, load_, folder / "two-nodes", two_nodes)
    progress(f"  on Ray, two local nodes: {len(two)} rows in {walls['two_nodes_s']:.1f}s "
             f"(+{walls['two_nodes_start_s']:.1f}s cluster start)")
    side = pd.DataFrame({"candidate": here["candidate"], "status": here["status"],
                         "ray_status": on_ray["status"], "p50_ms": here["p50_ms"], "ray_p50_ms": on_ray["p50_ms"],
                         "two_p50_ms": two["p50_ms"], "two_node": two["node_id"].str[:6],
                         "quality": here["quality"], "ray_quality": on_ray["quality"]})
    side["ray_over_in_process"] = side["ray_p50_ms"] / side["p50_ms"]
    side["two_over_in_process"] = side["two_p50_ms"] / side["p50_ms"]
    ok = on_ray["status"].eq("ok")  # every row was measured by this bench (fresh folders): stored ones too
    per = {"build_s": on_ray["apply_s"], "measure_s": on_ray["measure_s"] + on_ray["evaluate_s"],
           "slot_s": on_ray["slot_ended_at"] - on_ray["slot_started_at"]}
    walls.update({f"per_candidate_{k}": float(v[ok].mean()) for k, v in per.items()})
    return side, walls, two


def overlaps(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(node, candidate, candidate) for every two measurements whose slot times overlap on one node."""
    found = []
    timed = rows.dropna(subset=["node_id", "slot_started_at", "slot_ended_at"])
    for node, group in timed.groupby("node_id"):
        spans = sorted(zip(group["slot_started_at"], group["slot_ended_at"], group["candidate"], strict=True))
        found += [(str(node)[:6], a[2], b[2]) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    return found


def hours_for(candidates: int, nodes: int, slot_s: float, start_s: float) -> float:
    """Wall hours on `nodes` nodes of one measurement slot each, a candidate holding its node's slot
    for `slot_s` (build + measure + evaluate): start + ceil(candidates / nodes) x slot_s."""
    return (start_s + math.ceil(candidates / nodes) * slot_s) / 3600


LAYOUT = Layout((
    Col("candidate", "candidate", 88, "<"),
    Col("status", "here", 6, before=" "), Col("ray_status", "ray", 6, before=" "),
    Col("p50_ms", "p50 ms here", 12, spec=".4f", before=" "),
    Col("ray_p50_ms", "1 node", 9, spec=".4f", before=" "),
    Col("ray_over_in_process", "/here", 7, text=lambda r: times(r.get("ray_over_in_process")), before=" "),
    Col("two_p50_ms", "2 nodes", 9, spec=".4f", before=" "),
    Col("two_over_in_process", "/here", 7, text=lambda r: times(r.get("two_over_in_process")), before=" "),
    Col("two_node", "node", 7, before=" "),
    Col("quality", "quality", 8, spec=".4f", before=" "),
    Col("ray_quality", "ray q.", 8, spec=".4f", before=" "),
))
SCALE_NODES = (1, 2, 8, 32)


def _share(part: float, whole: float) -> str:
    return "n/a" if missing(part) or missing(whole) or not whole else f"{part / whole:.0%}"


def targets(side: pd.DataFrame, walls: dict[str, float], two: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Not judged (the issue sets no figure): the p50 and wall-time ratios, the two-node overlap
    check and the scaling model, said plainly."""
    ratios = side["ray_over_in_process"].dropna()
    median = float(ratios.median()) if len(ratios) else None
    same = bool((side["status"] == side["ray_status"]).all() and
                ((side["quality"] - side["ray_quality"]).abs().fillna(0) < 1e-9).all())
    wall = walls["ray_s"] / walls["in_process_s"] if walls.get("in_process_s") else None
    rows = [
        target("per-candidate p50 on Ray / in process (median)", median, None, COMMAND,
               f"p50 on Ray over p50 in process, median over {len(ratios)} candidates: {times(median)} "
               f"(range {times(ratios.min() if len(ratios) else None)}-{times(ratios.max() if len(ratios) else None)}) "
               f"(statuses and qualities {'identical' if same else 'DIFFER'})"),
        target("study wall time on Ray / in process", wall, None, COMMAND,
               f"wall time on Ray {walls['ray_s']:.1f}s vs in process {walls['in_process_s']:.1f}s: {times(wall)} "
               f"(summed over per-candidate steps that alternate which side goes first; one measurement "
               f"slot: candidates run one at a time; the cluster's start, {walls['ray_start_s']:.1f}s, is apart; "
               f"the Ray worker pays its own first imports)"),
    ]
    if two is not None and walls.get("two_nodes_s"):
        found = overlaps(two)
        used = int(two["node_id"].nunique())
        speed = walls["ray_s"] / walls["two_nodes_s"]
        rows.append(target(
            "two local nodes: wall time one node / two nodes", speed, None, COMMAND,
            f"wall time on two local nodes {walls['two_nodes_s']:.1f}s vs one node {walls['ray_s']:.1f}s (its "
            f"per-candidate steps summed): one/two "
            f"{times(speed)} (above 1: two nodes were faster; each node's worker pays its own first imports; "
            f"+{walls['two_nodes_start_s']:.1f}s start); {used} nodes measured; measurements overlapping on a "
            f"node: {len(found)}{' ' + str(found) if found else ''}. On one host the nodes share the machine "
            f"(each on its own core, but the same memory and load): this checks the mechanism, not a speed-up"))
    slot_s, start_s = walls.get("per_candidate_slot_s"), walls.get("ray_start_s", 0.0)
    if slot_s is not None and not missing(slot_s):
        hours = {n: hours_for(1000, n, slot_s, start_s) for n in SCALE_NODES}
        rows.append(target(
            "scaling model: wall hours for 1,000 candidates on 32 nodes", hours[32], None, COMMAND,
            f"scaling model (one slot per node, a candidate holds it for build + measure + evaluate): "
            f"wall = start + ceil(C / N) x slot, with the one-node run's means: build "
            f"{walls['per_candidate_build_s']:.2f}s + measure/evaluate {walls['per_candidate_measure_s']:.2f}s, "
            f"slot {slot_s:.2f}s per candidate (ok rows), start {start_s:.1f}s -> 1,000 candidates: "
            + ", ".join(f"N={n}: {h:.2f} h" for n, h in hours.items())
            + f"; building outside the slot (on other cores) would save at most the build's share, "
              f"{_share(walls['per_candidate_build_s'], slot_s)}"))
    return rows


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
        side, walls, two = run_all(args.smoke, Path(tmp), out.progress)
    out.table("candidates", LAYOUT, side.to_dict("records"))
    out.keep("two_nodes", two[[c for c in TWO_NODE_COLUMNS if c in two]])
    errors = side[(side["status"] != "ok") | (side["ray_status"] != "ok")]
    if len(errors):
        out.say(f"not ok in either run: {', '.join(errors['candidate'])}")
    out.say("\nfigures (ratios from the same run; others share these cores, so expect noise):")
    out.targets(targets(side, walls, two), indent="  ")
    out.write_json(args.json)
    return 0 if not missing(walls.get("ray_s")) else 1
