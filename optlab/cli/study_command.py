"""`optlab study`: every flag checked before work starts, the user's model loaded, the study run
and its table, failures, recommendation and report printed."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from optlab.cli import STARTED
from optlab.cli.errors import UsageError
from optlab.instruments.latency import Workload
from optlab.models import hf_folder, user_models
from optlab.models.onnx_signature import cli_spelling
from optlab.models.output_checks import DegenerateSample
from optlab.recipes.presets import ONNX_RECIPES, OPTIMUM_RECIPES
from optlab.recipes.recipe import parse
from optlab.study.store import IncompatibleStore, OtherStudyFolder, StoreBusy
from optlab.techniques.torch_io import needs_module

REPORT_RESERVE_SHARE = 0.1  # of a time limit, kept for writing results.csv and report.html
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention


def _declared(pairs, flag: str) -> dict | None:
    """The repeated NAME=VALUE flags as a dict; a name given twice is a usage error."""
    out: dict = {}
    for name, value in pairs or []:
        if name in out and out[name] != value:
            raise UsageError(f"{flag} {name} given twice ({out[name]} and {value}); give it once")
        out[name] = value
    return out or None


def _torch_only(recipe) -> str | None:
    """Why `recipe` cannot run on an ONNX file (None if it can), as the techniques say it
    (`optlab.techniques.torch_io.needs_module`: pruning, distillation, torch quantization, ...)."""
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


def cmd_study(args) -> int:
    recipes = _validate_study(args)

    # on use, not at the top: `cli.main` imports this module for every optlab command, and these import
    # pandas (the study's tables) and altair (the report's charts)
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
