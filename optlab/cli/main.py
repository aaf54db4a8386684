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
import math
import sys

from optlab.bench.__main__ import main as bench_main
from optlab.cli.errors import UsageError
from optlab.cli.notebooks import cmd_main, cmd_notebooks, cmd_report, cmd_run, parse_value
from optlab.cli.serve_bench import add_parser as add_serve_bench
from optlab.cli.study_command import _torch_only, _validate_study, cmd_study
from optlab.models.output_kinds import OUTPUT_KINDS
from optlab.study.costs import price

# re-exported: the entry module offers the study command's checks beside the parser that uses them
__all__ = ["build_parser", "main", "_torch_only", "_validate_study"]

EXIT_USAGE = 2  # bad arguments, like argparse


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
    value = parse_value(text)
    try:
        price(value)
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error).splitlines()[0]) from None
    return value


def _declaration(flag: str):
    """argparse type for NAME=VALUE flags: --batch-axis state=1 (none: a constant), --output-kind out=sequence."""
    def parse(text: str) -> tuple[str, object]:
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


def _cmd_bench(args) -> int:
    return bench_main([args.name, *args.rest])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="optlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    main = sub.add_parser("main", help="run every walkthrough notebook and write the report")
    main.add_argument("--smoke", action="store_true", help="the tiny CI setting instead of the workshop one")
    main.add_argument("--out", default="out", help="output folder (default: out)")
    main.set_defaults(func=cmd_main)

    run = sub.add_parser("run", help="run chosen notebooks headlessly with papermill")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="papermill parameter, e.g. -p smoke true")
    run.add_argument("--out", default="out")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="write the HTML report from stored results")
    report.add_argument("results_dirs", nargs="+")
    report.add_argument("--out", default="out/report.html")
    report.set_defaults(func=cmd_report)

    bench = sub.add_parser("bench", help="benchmarks that print figures (zoo, measure, techniques, pruning)")
    bench.add_argument("name")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)

    notebooks = sub.add_parser("notebooks", help="strip, check or refresh the committed notebooks' outputs")
    notebooks.add_argument("action", choices=["strip", "check", "refresh"])
    notebooks.add_argument("notebooks", nargs="*")
    notebooks.set_defaults(func=cmd_notebooks)

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
    study.set_defaults(func=cmd_study)
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
