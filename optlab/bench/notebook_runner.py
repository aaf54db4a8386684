"""Run the walkthrough notebooks headlessly and time them: the main job's engine and
`python -m optlab.bench notebooks [--smoke] [--only 01,05] [--json FILE]`.

A workshop attendee's Run All starts with the models already trained (the room's setup, or the
main job's first step, trains and caches them once), so the models are prepared as their own
timed step and each notebook's seconds are what Run All costs. The bench prints each notebook's
time against the three-minute budget a workshop allows, with the load average and CPU flags
beside it: a figure from a busy machine says so.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
WORKSHOP_BUDGET_S = 180.0  # an attendee waits this long for Run All
MAIN_JOB_BUDGET_S = 15 * 60.0


def walkthrough_notebooks() -> list[Path]:
    """The numbered walkthroughs, in order (00_tour.ipynb, 01_quantization.ipynb, ...)."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def prepare_models(smoke: bool = False) -> list[dict]:
    """Train (or load from the cache) every model the walkthroughs use; one timing record each.
    Idempotent: a second call only reads the cache."""
    from optlab.data.datasets import load as load_dataset  # lazy: torch
    from optlab.models import zoo  # lazy: torch

    records = []
    for name in ("bids", "digits", "intents"):
        start = time.perf_counter()
        zoo.get(name, data=load_dataset(name, smoke=smoke), smoke=smoke)
        records.append({"step": f"model: {name}", "seconds": round(time.perf_counter() - start, 1)})
    if not smoke:  # smoke runs use seeded tiny language models, nothing to train
        start = time.perf_counter()
        zoo.language_models(smoke=False)
        records.append({"step": "model: language (target + draft)", "seconds": round(time.perf_counter() - start, 1)})
    return records


def results_dir_parameter(path: Path, folder: Path) -> dict[str, str]:
    """`{"results_dir": folder}` for a notebook whose parameters cell declares one, else nothing:
    06 stores no study, and papermill warned of an unknown parameter."""
    import papermill as pm

    declared = {p["name"] for p in pm.inspect_notebook(str(path)).values()}
    return {"results_dir": str(Path(folder).resolve())} if "results_dir" in declared else {}


def run_notebooks(paths: list[Path], out: Path, parameters: dict) -> list[dict]:
    """Execute notebooks with papermill into `out/notebooks`, each storing its study under
    `out/results/<stem>`. Returns one timing record per notebook; a failing notebook is
    recorded (with the failing cell) and the others still run."""
    import papermill as pm  # lazy: heavy
    from tqdm.auto import tqdm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OPTLAB_HEADLESS", "1")  # the kernels papermill starts inherit it: static charts
    for path in paths:
        if not Path(path).exists():
            raise SystemExit(f"no such notebook: {path} (the walkthroughs are: "
                             f"{', '.join(p.name for p in walkthrough_notebooks())})")
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    records = []
    bar = tqdm(paths, desc="notebooks", unit="nb")
    for path in bar:
        path = Path(path)
        bar.set_postfix_str(path.name)
        params = {**results_dir_parameter(path, out / "results" / path.stem), **parameters}
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(str(path), str(out / "notebooks" / path.name), parameters=params,
                                cwd=str(path.parent), progress_bar=False, kernel_name="python3")
        except Exception as exc:  # noqa: BLE001 - one failing notebook must not stop the rest
            error = f"{type(exc).__name__}: {exc}".strip()[:2000]
        seconds = time.perf_counter() - start
        records.append({"notebook": path.name, "seconds": round(seconds, 1), "ok": error is None,
                        "error": error, "parameters": params,
                        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)})
        status = "ok" if error is None else "FAILED"
        tqdm.write(f"{path.name}: {status} in {seconds:.1f} s" + ("" if error is None else f"\n{error}"))
    return records


def timing_table(steps: list[dict], records: list[dict], budget_s: float | None) -> str:
    """The per-step table both the main job and the bench print."""
    lines = [f"{'step':<38}{'seconds':>8}  status"]
    for step in steps:
        lines.append(f"{step['step']:<38}{step['seconds']:>8.1f}  ok")
    for r in records:
        status = "ok" if r["ok"] else "FAILED"
        if r["ok"] and budget_s is not None:
            status = "within" if r["seconds"] <= budget_s else f"OVER the {budget_s:.0f} s budget"
        load = f"  (load {r['load_before']:.1f} -> {r['load_after']:.1f})" if "load_before" in r else ""
        lines.append(f"{r['notebook']:<38}{r['seconds']:>8.1f}  {status}{load}")
    total = sum(s["seconds"] for s in steps) + sum(r["seconds"] for r in records)
    lines.append(f"{'total':<38}{total:>8.1f}")
    return "\n".join(lines)


def _machine_line() -> str:
    from optlab.instruments.environment import environment  # lazy: reads /proc once

    env = environment()
    return (f"{env.cpu_model}, {env.cores} cores, flags: {env.cpu_flags}; "
            f"load average {os.getloadavg()[0]:.2f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlab.bench notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the CI setting instead of the workshop one")
    parser.add_argument("--only", default="", help="comma-separated notebook numbers or names, e.g. 01,05")
    parser.add_argument("--json", help="also write the records to this file")
    parser.add_argument("--out", help="output folder (default: a fresh temporary one, so nothing is reused)")
    args = parser.parse_args(argv)
    paths = walkthrough_notebooks()
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        paths = [p for p in paths if any(p.name.startswith(w) or p.stem == w for w in wanted)]
        if not paths:
            raise SystemExit(f"--only {args.only}: no notebook matches; the walkthroughs are "
                             f"{', '.join(p.name for p in walkthrough_notebooks())}")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="optlab-notebooks-"))
    print(_machine_line(), flush=True)
    steps = prepare_models(smoke=args.smoke)
    records = run_notebooks(paths, out, {"smoke": bool(args.smoke)})
    print()
    print(timing_table(steps, records, None if args.smoke else WORKSHOP_BUDGET_S))
    print(_machine_line())
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": steps, "notebooks": records}, indent=2))
    return 0 if all(r["ok"] for r in records) else 1
