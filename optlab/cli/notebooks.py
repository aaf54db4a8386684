"""The walkthrough notebooks from the command line: `optlab run`, `optlab main` (every notebook,
then the report), `optlab report` (the HTML report from stored results) and `optlab notebooks`
(keep committed notebooks free of bulky outputs)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from optlab.cli import notebook_outputs

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
REPORT_PRICE = "cpu-small"  # the price preset the report's cost columns use


def walkthrough_notebooks() -> list[Path]:
    """The numbered walkthroughs, in order (00_tour.ipynb, 01_quantization.ipynb, ...)."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def parse_value(text: str):
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
    os.environ.setdefault("OPTLAB_HEADLESS", "1")  # the kernels papermill starts inherit it: static charts
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


def cmd_run(args) -> int:
    parameters = {name: parse_value(value) for name, value in (args.parameter or [])}
    records = run_notebooks([Path(p) for p in args.notebooks], Path(args.out), parameters)
    return 0 if all(r["ok"] for r in records) else 1


def cmd_main(args) -> int:
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
