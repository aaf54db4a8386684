"""`optlab` command line: run walkthrough notebooks headlessly, build the report, benchmarks.

    optlab main [--smoke] [--out out]           every notebook, default setting, then the report
    optlab run NOTEBOOK... [-p NAME VALUE]...   a chosen subset (papermill), with progress
    optlab report RESULTS_DIR... --out FILE     the HTML report from stored study results
    optlab bench NAME [--smoke]                 a benchmark that prints figures
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def walkthrough_notebooks() -> list[Path]:
    """The numbered walkthroughs, in order (00_tour.ipynb, 01_quantization.ipynb, ...)."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _parse_value(text: str):
    """papermill -p values: JSON where it parses (true, 3, 0.5, "x"), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_notebooks(paths: list[Path], out: Path, parameters: dict) -> list[dict]:
    """Execute notebooks with papermill into `out/notebooks`, each storing its study under
    `out/results/<stem>`. Returns one timing record per notebook; a failing notebook is
    recorded (with the failing cell) and the others still run."""
    import papermill as pm
    from tqdm.auto import tqdm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    records = []
    bar = tqdm(paths, desc="notebooks", unit="nb")
    for path in bar:
        path = Path(path)
        if not path.exists():
            raise SystemExit(f"no such notebook: {path} (the walkthroughs are: "
                             f"{', '.join(p.name for p in walkthrough_notebooks())})")
        bar.set_postfix_str(path.name)
        params = {"results_dir": str((out / "results" / path.stem).resolve()), **parameters}
        start = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(str(path), str(out / "notebooks" / path.name), parameters=params,
                                cwd=str(path.parent), progress_bar=False, kernel_name="python3")
        except Exception as exc:  # noqa: BLE001 - one failing notebook must not stop the rest
            error = f"{type(exc).__name__}: {exc}".strip()[:2000]
        seconds = time.perf_counter() - start
        records.append({"notebook": path.name, "seconds": round(seconds, 1), "ok": error is None,
                        "error": error, "parameters": params})
        status = "ok" if error is None else "FAILED"
        tqdm.write(f"{path.name}: {status} in {seconds:.1f} s" + ("" if error is None else f"\n{error}"))
    return records


def _cmd_run(args) -> int:
    parameters = {name: _parse_value(value) for name, value in (args.parameter or [])}
    records = run_notebooks([Path(p) for p in args.notebooks], Path(args.out), parameters)
    return 0 if all(r["ok"] for r in records) else 1


def _cmd_main(args) -> int:
    out = Path(args.out)
    parameters = {"smoke": bool(args.smoke)}
    notebooks = walkthrough_notebooks()
    records = run_notebooks(notebooks, out, parameters)
    (out / "timings.json").write_text(json.dumps(records, indent=2))
    report = _write_report(sorted((out / "results").glob("*")), out / "report.html", records)
    print("\nnotebook                          seconds  status")
    for r in records:
        print(f"{r['notebook']:<34}{r['seconds']:>7.1f}  {'ok' if r['ok'] else 'FAILED'}")
    print(f"\nreport: {report}")
    return 0 if all(r["ok"] for r in records) else 1


def _write_report(results_dirs: list[Path], path: Path, records: list[dict] | None = None) -> Path:
    from optlab.report import write_study_report

    return write_study_report(results_dirs, path, notebook_timings=records)


def _cmd_report(args) -> int:
    report = _write_report([Path(p) for p in args.results_dirs], Path(args.out))
    print(f"report: {report}")
    return 0


def _cmd_bench(args) -> int:
    from optlab.bench.__main__ import main as bench_main

    return bench_main([args.name, *args.rest])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    main = sub.add_parser("main", help="run every walkthrough notebook and write the report")
    main.add_argument("--smoke", action="store_true", help="the tiny CI setting instead of the workshop one")
    main.add_argument("--out", default="out", help="output folder (default: out)")
    main.set_defaults(func=_cmd_main)

    run = sub.add_parser("run", help="run chosen notebooks headlessly with papermill")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="papermill parameter, e.g. -p smoke true")
    run.add_argument("--out", default="out")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="write the HTML report from stored results")
    report.add_argument("results_dirs", nargs="+")
    report.add_argument("--out", default="out/report.html")
    report.set_defaults(func=_cmd_report)

    bench = sub.add_parser("bench", help="benchmarks that print figures (zoo, measure, techniques, pruning)")
    bench.add_argument("name")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
