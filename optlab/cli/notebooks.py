"""The walkthrough notebooks from the command line: `optlab run`, `optlab main` (every notebook,
then the report), `optlab report` (the HTML report from stored results) and `optlab notebooks`
(keep committed notebooks free of bulky outputs)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from optlab.bench.notebook_runner import (
    MAIN_JOB_BUDGET_S,
    NOTEBOOKS,
    prepare_models,
    run_notebooks,
    timing_table,
    walkthrough_notebooks,
)
from optlab.cli import notebook_outputs

__all__ = ["run_notebooks", "walkthrough_notebooks", "cmd_main", "cmd_run", "cmd_report", "cmd_notebooks"]
REPORT_PRICE = "cpu-small"  # the price preset the report's cost columns use


def parse_value(text: str):
    """papermill -p values: JSON where it parses (true, 3, 0.5, "x"), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_run(args) -> int:
    parameters = {name: parse_value(value) for name, value in (args.parameter or [])}
    records = run_notebooks([Path(p) for p in args.notebooks], Path(args.out), parameters)
    return 0 if all(r["ok"] for r in records) else 1


def cmd_main(args) -> int:
    """Models first (trained once and cached, as a workshop's setup does), then every notebook in
    its default setting, then the report; each step's seconds printed at the end."""
    out = Path(args.out)
    started = time.perf_counter()
    steps = prepare_models(smoke=bool(args.smoke))
    records = run_notebooks(walkthrough_notebooks(), out, {"smoke": bool(args.smoke)})
    (out / "timings.json").write_text(json.dumps({"steps": steps, "notebooks": records}, indent=2))
    report_start = time.perf_counter()
    report = _write_report(sorted((out / "results").glob("*")), out / "report.html", records)
    steps_after = [{"step": "report", "seconds": round(time.perf_counter() - report_start, 1)}]
    print()
    print(timing_table(steps + steps_after, records, None))
    wall = time.perf_counter() - started
    budget = "" if args.smoke else (f" (goal {MAIN_JOB_BUDGET_S / 60:.0f} min: "
                                    f"{'met' if wall <= MAIN_JOB_BUDGET_S else 'MISSED'})")
    print(f"main job wall time {wall / 60:.1f} min{budget}")
    print(f"\nreport: {report}")
    return 0 if all(r["ok"] for r in records) else 1


def _write_report(results_dirs: list[Path], path: Path, records: list[dict] | None = None) -> Path:
    """One HTML report over the studies stored in `results_dirs` (one section per study)."""
    import pandas as pd

    from optlab.study.costs import with_costs
    from optlab.study.store import Store
    from optlab.views.report import write_report

    frames = {}
    for folder in results_dirs:
        folder = Path(folder)
        if not (folder / "optlab-store.json").exists():
            print(f"skipping {folder}: no optlab results there")
            continue
        rows = Store(folder, read_only=True).rows()
        if rows:
            frames[folder.name] = with_costs(pd.DataFrame(rows), REPORT_PRICE)
    if not frames:
        raise SystemExit(f"no study results found in {', '.join(map(str, results_dirs)) or 'the given folders'}; "
                         f"run the notebooks first (optlab main) or point at a study's results_dir")
    timings = None
    if records:
        timings = pd.DataFrame([{k: r[k] for k in ("notebook", "seconds", "ok", "error")} for r in records])
    return write_report(frames, path, title="optlab: measured trade-offs", timings=timings)


def cmd_report(args) -> int:
    report = _write_report([Path(p) for p in args.results_dirs], Path(args.out))
    print(f"report: {report}")
    return 0


def cmd_notebooks(args) -> int:
    import nbformat

    paths = [Path(p) for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    failed = False
    for path in paths:
        if args.action == "refresh":
            notebook_outputs.refresh_checked(path)
            print(f"{path}: checked outputs refreshed from a smoke run, the rest stripped")
        elif args.action == "strip":
            nbformat.write(notebook_outputs.strip(nbformat.read(path, as_version=4)), path)
            print(f"{path}: stripped")
        else:
            problems = notebook_outputs.bulky_outputs(nbformat.read(path, as_version=4))
            failed |= bool(problems)
            print(f"{path}: " + ("clean" if not problems else "; ".join(problems)))
    return 1 if failed else 0
