"""`optlab` command line: run walkthrough notebooks headlessly, build the report, benchmarks.

    optlab main [--smoke] [--out out]           every notebook, default setting, then the report
    optlab run NOTEBOOK... [-p NAME VALUE]...   a chosen subset (papermill), with progress
    optlab report RESULTS_DIR... --out FILE     the HTML report from stored study results
    optlab bench NAME [--smoke]                 a benchmark that prints figures
    optlab notebooks strip|check|refresh [NB]   keep committed notebooks free of bulky outputs
    optlab study --model M.onnx --inputs X.npz  your own model: a study, a table and a report
    optlab study --model DIR/ --inputs T.csv --text-column text   your own transformer (save_pretrained folder)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from optlab.cli.errors import UsageError
from optlab.cli.serve_bench import add_parser as add_serve_bench

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
STARTED = time.monotonic()  # `optlab study --time-limit-s` counts from here
REPORT_RESERVE_SHARE = 0.1  # of a time limit, kept for writing results.csv and report.html
EXIT_USAGE = 2  # bad arguments, like argparse
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block), exit code 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _number(kind: str, *, minimum: float, inclusive: bool, unit: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {kind} in {unit}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise argparse.ArgumentTypeError(f"{text} must be {bound} ({kind} in {unit})")
        return value
    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def _price(text: str):
    from optlab.study.costs import price

    value = _parse_value(text)
    try:
        price(value)
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error).splitlines()[0]) from None
    return value


def _declaration(flag: str):
    """argparse type for NAME=VALUE flags: --batch-axis state=1 (none: a constant), --output-kind out=sequence."""
    def parse(text: str) -> tuple[str, object]:
        from optlab.models.user_models import OUTPUT_KINDS

        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(f"{text!r}: write NAME=VALUE, e.g. {flag} "
                                             f"{'state=1' if flag == '--batch-axis' else 'logits=sequence'}")
        if flag == "--output-kind":
            if value not in OUTPUT_KINDS:
                raise argparse.ArgumentTypeError(f"{text!r}: the kind is one of {', '.join(OUTPUT_KINDS)}")
            return name, value
        if value.lower() == "none":
            return name, None
        if not value.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: the axis is a number (0, 1, ...) or none for a constant")
        return name, int(value)
    parse.__name__ = flag
    return parse


def _declared(pairs, flag: str) -> dict | None:
    """The repeated NAME=VALUE flags as a dict; a name given twice is a usage error."""
    out: dict = {}
    for name, value in pairs or []:
        if name in out and out[name] != value:
            raise UsageError(f"{flag} {name} given twice ({out[name]} and {value}); give it once")
        out[name] = value
    return out or None


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


REPORT_PRICE = "cpu-small"  # the price preset the report's cost columns use


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


def _cmd_report(args) -> int:
    report = _write_report([Path(p) for p in args.results_dirs], Path(args.out))
    print(f"report: {report}")
    return 0


def _cmd_bench(args) -> int:
    from optlab.bench.__main__ import main as bench_main

    return bench_main([args.name, *args.rest])


def _cmd_notebooks(args) -> int:
    import nbformat

    from optlab.cli import notebook_outputs

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


def _torch_only(recipe) -> str | None:
    """Why `recipe` cannot run on an ONNX file (None if it can), as the techniques say it
    (`optlab.techniques.torch_io.needs_module`: pruning, distillation, torch quantization, ...)."""
    from optlab.techniques.torch_io import needs_module

    why = needs_module(recipe)
    return None if why is None else f"a PyTorch model ({why})"


def _existing(path: str | None, flag: str, suffixes: tuple[str, ...]) -> Path | None:
    if path is None:
        return None
    file = Path(path)
    if not file.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if not file.is_file():
        raise UsageError(f"{flag} {path} is a folder; give a {' or '.join(suffixes)} file")
    if file.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: expected a {' or '.join(suffixes)} file, got {file.suffix or 'no suffix'}")
    return file


def _writable_folder(path: Path, flag: str) -> None:
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UsageError(f"{flag} {path}: {folder} is a file, not a folder; choose another {flag}")
            if not os.access(folder, os.W_OK):
                raise UsageError(f"{flag} {path}: {folder} is not writable; choose another {flag}")
            return


def _is_text_study(args) -> bool:
    """A save_pretrained folder and a CSV of texts (rather than an ONNX file and arrays)."""
    return bool(Path(args.model).is_dir() or args.text_column or args.label_column or args.padding or
                Path(args.inputs).suffix.lower() == ".csv")


def _validate_text_inputs(args):
    """The text path's flags, the folder and the CSV, checked before any weights load (one line each)."""
    from optlab.models import hf_folder

    model, inputs = Path(args.model), Path(args.inputs)
    onnx_model = model.suffix.lower() == ".onnx"
    if args.text_column and (onnx_model or inputs.suffix.lower() in (".npz", ".npy")):
        given = f"--model {model.name} is an ONNX file" if onnx_model else f"--inputs {inputs.name} holds arrays"
        raise UsageError(f"--text-column names the column of texts in a CSV for a save_pretrained folder, but {given}; "
                         f"an ONNX model takes --inputs .npz arrays (tokenize the texts yourself) without "
                         f"--text-column, a transformer folder takes --model ./folder/ --inputs texts.csv "
                         f"--text-column NAME")
    if onnx_model or model.is_file():
        flag = ("--label-column" if args.label_column else "--padding" if args.padding else "--inputs")
        raise UsageError(f"{flag} {getattr(args, flag[2:].replace('-', '_'))} is for a save_pretrained folder with a "
                         f"CSV of texts, but --model {model.name} is a file; an ONNX model takes --inputs .npz "
                         f"arrays and --labels .npy")
    if not model.exists():
        raise UsageError(f"--model {args.model}: no such folder or file")
    if not args.text_column:
        given = f"--inputs {inputs.name}" if inputs.suffix.lower() == ".csv" else f"--model {model.name}/ is a folder"
        raise UsageError(f"{given}: name the CSV column that holds the texts with --text-column NAME (a folder "
                         f"takes --inputs texts.csv --text-column NAME [--label-column NAME])")
    if inputs.suffix.lower() != ".csv":
        raise UsageError(f"--inputs {args.inputs}: a save_pretrained folder reads texts from a .csv file, got "
                         f"{inputs.suffix or 'no suffix'}")
    for flag, value, instead in (("--labels", args.labels, "name the CSV's label column: --label-column NAME"),
                                 ("--metric", args.metric, "with --label-column quality is accuracy, without it the "
                                                           "agreement with the model as given"),
                                 ("--calibration", args.calibration, "a held-out part of the CSV calibrates static "
                                                                     "int8 and is never measured"),
                                 ("--batch-axis", getattr(args, "batch_axis", None), "the tokenizer's arrays are "
                                                                                     "batch-first"),
                                 ("--output-kind", getattr(args, "output_kind", None), "the outputs are the "
                                                                                       "model's class scores")):
        if value:
            raise UsageError(f"{flag} is for ONNX models with array inputs; for a folder and a CSV of texts, "
                             f"{instead}")
    try:
        return hf_folder.check_inputs(model, inputs, text_column=args.text_column, label_column=args.label_column)
    except (ValueError, FileNotFoundError, TypeError) as error:
        raise UsageError(" ".join(str(error).split())) from None


def _load_user_model(args):
    """(baseline, data) for `optlab study`: an ONNX file with arrays, or a folder with texts."""
    from optlab.models import hf_folder, user_models
    from optlab.models.onnx_signature import cli_spelling
    from optlab.models.output_checks import DegenerateSample

    checked = getattr(args, "text_inputs", None)
    if checked is not None:
        return hf_folder.from_folder(checked.folder, args.inputs, padding=args.padding or "longest", checked=checked)
    # an error that asks for a declaration names the flag, not the Python keyword; a degenerate
    # sample is said in one line (Python's warning format takes two)
    with cli_spelling(), warnings.catch_warnings(record=True) as caught:  # the filters in force stay
        loaded = user_models.from_onnx(Path(args.model), args.inputs, labels=args.labels, metric=args.metric,
                                       calibration=args.calibration,
                                       batch_axes=_declared(getattr(args, "batch_axis", None), "--batch-axis"),
                                       output_kinds=_declared(getattr(args, "output_kind", None), "--output-kind"))
    for warning in caught:
        if issubclass(warning.category, DegenerateSample):
            print(f"optlab study: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return loaded


def _print_text_notes(baseline) -> None:
    """The text path says how it tokenized, padded and split the CSV."""
    for note in baseline.meta.get("notes", [])[1:]:
        print(f"texts: {note}")


def _print_failures(results) -> None:
    """The headline table leaves error rows out: name them, with their one-line errors."""
    if "status" not in results.columns:
        return
    for _, row in results[results["status"] == "error"].iterrows():
        print(f"failed: {row['candidate']}: {' '.join(str(row.get('error')).split())[:300]}")


def _validate_study(args) -> list:
    """Every flag of `optlab study`, checked before any work starts; returns the recipes."""
    from optlab.recipes.presets import ONNX_RECIPES, OPTIMUM_RECIPES
    from optlab.recipes.recipe import parse

    model = Path(args.model)
    if model.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl"):
        raise UsageError(f"{model}: optlab does not unpickle checkpoints (they can run arbitrary code). Export the "
                         f"model to ONNX (torch.onnx.export), or in Python pass the module object to "
                         f"optlab.models.user_models.from_module(module, inputs)")
    if model.is_dir() and model.suffix.lower() == ".onnx":
        raise UsageError(f"--model {args.model} is a folder named like an ONNX file; give the .onnx file inside it "
                         f"(or a save_pretrained folder with --inputs texts.csv --text-column NAME)")
    texts = _is_text_study(args)
    args.text_inputs = _validate_text_inputs(args) if texts else None
    if not texts:
        _existing(args.model, "--model", (".onnx",))
        _existing(args.inputs, "--inputs", (".npz", ".npy"))
        _existing(args.labels, "--labels", (".npy",))
        _existing(args.calibration, "--calibration", (".npz", ".npy"))
    if args.labels and not args.metric:
        raise UsageError("--labels needs --metric to score predictions against them: accuracy, f1, auc or logloss "
                         "for class labels, mae, rmse or r2 for continuous targets")
    if args.metric and not args.labels:
        raise UsageError(f"--metric {args.metric} needs --labels (a .npy with one label per input row); without "
                         f"labels quality is the agreement with the original model's outputs")
    out = Path(args.out)
    _writable_folder(out, "--out")
    for name in ("results", "results.csv", "report.html"):
        target = out / name
        if target.exists() and target.is_dir() != (name == "results"):
            raise UsageError(f"--out {out}: {target} is in the way (a {'file' if name == 'results' else 'folder'}); "
                             f"choose another --out")
    recipes = []
    for text in args.recipe or []:
        try:
            recipe = parse(text)
        except (ValueError, TypeError) as error:
            raise UsageError(f"--recipe {text!r}: {error}") from None
        why = None if texts else _torch_only(recipe)  # a folder's baseline is a torch module: every recipe applies
        if why:
            raise UsageError(f"--recipe {text!r} needs {why}, and --model {model.name} is an ONNX file; ONNX models "
                             f"take compile(...) and quantize(..., runtime=onnxruntime) recipes (to prune or distil, "
                             f"pass the torch module in Python: optlab.models.user_models.from_module)")
        recipes.append(recipe)
    return recipes or list(OPTIMUM_RECIPES if texts else ONNX_RECIPES)


def _cmd_study(args) -> int:
    recipes = _validate_study(args)

    from optlab.instruments.latency import Workload
    from optlab.study.store import IncompatibleStore, OtherStudyFolder, StoreBusy
    from optlab.study.study import Pricing, RunOptions, Study
    from optlab.views.report import console_table, write_report

    model = Path(args.model)
    try:
        baseline, data = _load_user_model(args)
    except (ValueError, FileNotFoundError, TypeError) as error:
        raise UsageError(" ".join(str(error).split())) from None
    out = Path(args.out)
    workload = Workload.smoke() if args.smoke else Workload.workshop()
    # The limit counts from the command's start and keeps a share for writing the report.
    reserve = 0.0 if args.time_limit_s is None else max(1.0, REPORT_RESERVE_SHARE * args.time_limit_s)
    study = Study(baseline, data, recipes, workload=workload, results_dir=out / "results",
                  pricing=Pricing(args.price_per_hour),
                  options=RunOptions(time_limit_s=args.time_limit_s, time_limit_from=STARTED,
                                     time_limit_reserve_s=reserve, verbose=args.verbose))
    interrupted = False
    try:
        results = study.run()
    except OtherStudyFolder as error:
        raise UsageError(f"--out {out} {error.difference}; choose another --out (e.g. --out {out / model.stem}) or "
                         f"delete {out} to start over") from None
    except StoreBusy as error:
        raise UsageError(str(error).replace("pass another results_dir", "choose another --out")) from None
    except IncompatibleStore as error:
        raise UsageError(f"--out {out}: {error}") from None
    except KeyboardInterrupt:
        interrupted = True
        results = study.results
    results.drop(columns=[c for c in results.columns if c.startswith("error_traceback")]).to_csv(
        out / "results.csv", index=False)
    missing = ""
    if study.skipped:
        why = (f"stopped at the {args.time_limit_s:g} s time limit" if study.stop_reason == "time limit"
               else "interrupted")
        missing = f"{why}; not run: {', '.join(study.skipped)}"
    try:
        explanation = study.recommend(max_p99_ms=args.max_p99_ms, max_quality_drop=args.max_quality_drop,
                                      objective=args.objective).explanation
    except ValueError as error:  # no usable rows yet (interrupted before the baseline finished)
        explanation = f"no recommendation: {error}"
    sla = {"max_p99_ms": args.max_p99_ms, "max_quality_drop": args.max_quality_drop, "objective": args.objective}
    title = f"optlab study: {model.name}" + (f" ({missing})" if missing else "")
    report = write_report({model.name: results}, out / "report.html", title=title, sla=sla)

    if args.text_inputs is not None:
        _print_text_notes(baseline)
    print(console_table(results))
    _print_failures(results)
    print(f"\n{explanation}\n")
    if missing:
        print(f"optlab study: {missing} (run the same command again to continue)")
    print(f"results: {out / 'results.csv'}\nreport: {report}")
    return EXIT_INTERRUPTED if interrupted else 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="optlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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

    notebooks = sub.add_parser("notebooks", help="strip, check or refresh the committed notebooks' outputs")
    notebooks.add_argument("action", choices=["strip", "check", "refresh"])
    notebooks.add_argument("notebooks", nargs="*")
    notebooks.set_defaults(func=_cmd_notebooks)

    study = sub.add_parser("study", help="run a study on your own ONNX model and inputs, write a report")
    study.add_argument("--model", required=True, help="an ONNX file, or a save_pretrained folder (model + tokenizer)")
    study.add_argument("--inputs", required=True,
                       help=".npz with one array per model input (or .npy); for a folder a .csv of texts")
    study.add_argument("--text-column", help="for a folder: the CSV column holding the texts")
    study.add_argument("--label-column", help="for a folder: the CSV column of labels (id2label names or class "
                                              "indices; optional, default: agreement with the model as given)")
    study.add_argument("--padding", choices=["longest", "max_length"],
                       help="for a folder: pad each request batch to its longest text (default) or to max length")
    study.add_argument("--labels", help=".npy with one label per input row (optional)")
    study.add_argument("--metric", choices=["accuracy", "f1", "auc", "logloss", "mae", "rmse", "r2"],
                       help="with --labels: accuracy, f1, auc, logloss (class labels) or mae, rmse, r2 (continuous "
                            "targets; the quality drop is then how much worse, in the target's units); "
                            "default: agreement with the original model's outputs")
    study.add_argument("--calibration", help=".npz of other representative inputs for static int8 calibration")
    # declarations for an ONNX model's inputs and outputs (the Python API's batch_axes= and output_kinds=)
    study.add_argument("--batch-axis", action="append", metavar="NAME=AXIS", type=_declaration("--batch-axis"),
                       help="repeatable: an input's (or output's) batch axis when it is not 0, e.g. state=1; "
                            "none for a constant input given once (sr=none)")
    study.add_argument("--output-kind", action="append", metavar="NAME=KIND", type=_declaration("--output-kind"),
                       help="repeatable: how an output is compared, e.g. logits=sequence; KIND is classes, "
                            "sequence, dense or values")
    study.add_argument("--recipe", action="append", metavar="RECIPE",
                       help='repeatable, e.g. "quantize(scheme=dynamic-int8, runtime=onnxruntime)"; '
                            "default: the ONNX recipe set for an .onnx file, optimum's (OPTIMUM_RECIPES) for a folder")
    study.add_argument("--max-p99-ms", default=None,
                       type=_number("a latency", minimum=0, inclusive=False, unit="milliseconds"))
    study.add_argument("--max-quality-drop", default=None,
                       type=_number("a quality drop", minimum=0, inclusive=True, unit="the metric's units"),
                       help="in the metric's units (0.01 = 1 point of accuracy or of output agreement)")
    study.add_argument("--objective", default="cost", choices=["cost", "latency", "size"])
    study.add_argument("--price-per-hour", default="cpu-small", type=_price,
                       help="USD per hour of the machine, or a preset name (cpu-small, cpu-large, gpu-h100)")
    study.add_argument("--smoke", action="store_true", help="tiny measurement settings (CI)")
    study.add_argument("--time-limit-s", default=None,
                       type=_number("a time limit", minimum=0, inclusive=False, unit="seconds"),
                       help="bound the whole command: no candidate starts after it; results.csv and report.html "
                            "name what was not run (run the command again to continue)")
    study.add_argument("--verbose", action="store_true",
                       help="print dependencies' warnings as they come (default: counted into each row's notes)")
    study.add_argument("--out", default="optlab-study")
    study.set_defaults(func=_cmd_study)
    add_serve_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        sys.stderr.write(f"optlab {args.command}: error: {error}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
