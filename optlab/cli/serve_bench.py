"""`optlab serve-bench`: throughput at a p99 SLA for an ONNX model served with batching.

    optlab serve-bench --model m.onnx --inputs x.npz --max-p99-ms 10 [--policy dynamic] [--out DIR]
                       [--study STUDY_OUT] [--recipe RECIPE]...

The model as given runs in ONNX Runtime (1 thread per worker) inside optlab's in-process server,
and so does each candidate built from it: the one a study recommends under the same SLA
(`--study`, the `--out` folder of `optlab study` on this model) and each `--recipe`; requests of
`--rows-per-request` rows are drawn
from the inputs' held-out part; the generator's headroom is measured first; then the throughput at
the SLA is searched for no batching and for `--policy`.
Prints the table and writes serve_bench.csv, latency_vs_load.csv, the charts (SVG) and report.html
(offline: the charts are embedded pictures, no script from anywhere).
"""
from __future__ import annotations

import argparse
import html
import warnings
from pathlib import Path

from optlab.cli.errors import UsageError
from optlab.models.user_models import CalibrationOnBenchmarkData, from_onnx
from optlab.recipes.recipe import from_json, parse
from optlab.serving.policies import NoBatching, parse_policy
from optlab.serving.server import Server
from optlab.serving.workloads import single_rows
from optlab.study.frontier import recommend
from optlab.techniques.registry import apply

DEFAULT_POLICY = "dynamic(max_batch=64, max_wait_ms=2)"


def add_parser(sub) -> None:
    parser = sub.add_parser("serve-bench", help="throughput at a p99 SLA of an ONNX model under load, with batching")
    parser.add_argument("--model", required=True, help="an ONNX file")
    parser.add_argument("--inputs", required=True, help=".npz with one array per model input (or .npy)")
    parser.add_argument("--max-p99-ms", type=float, default=10.0, help="the SLA: p99 latency in ms (default 10)")
    parser.add_argument("--policy", default="dynamic",
                        help=f"batching policy beside 'none': none, static(batch_size=8), dynamic(max_batch=..., "
                             f"max_wait_ms=...); 'dynamic' alone is {DEFAULT_POLICY}")
    parser.add_argument("--recipe", action="append", metavar="RECIPE",
                        help='repeatable: also serve the model optimized by a recipe, e.g. '
                             '"quantize(scheme=dynamic-int8, runtime=onnxruntime)"')
    parser.add_argument("--study", metavar="STUDY_OUT",
                        help="also serve the candidate that study recommends under --max-p99-ms (the --out folder "
                             "of `optlab study` on this model: its results.csv)")
    parser.add_argument("--max-quality-drop", type=float, default=None,
                        help="with --study: the quality limit of the recommendation (default: none)")
    parser.add_argument("--workers", type=int, default=1, help="server worker threads (x 1 thread each)")
    parser.add_argument("--rows-per-request", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="short probes (CI)")
    parser.add_argument("--out", default="optlab-serve-bench")
    parser.set_defaults(func=run_command)


def _checked(args):
    model, inputs = Path(args.model), Path(args.inputs)
    if not model.is_file() or model.suffix != ".onnx":
        raise UsageError(f"--model {model}: not an .onnx file; pass the path of your exported ONNX model")
    if not inputs.is_file():
        raise UsageError(f"--inputs {inputs}: no such file; pass an .npz with one array per model input")
    if not args.max_p99_ms > 0:
        raise UsageError(f"--max-p99-ms must be > 0, got {args.max_p99_ms}")
    if args.max_quality_drop is not None and not args.max_quality_drop >= 0:
        raise UsageError(f"--max-quality-drop must be >= 0 (a fraction: 0.01 = 1 point), got {args.max_quality_drop}")
    if args.rows_per_request < 1 or args.workers < 1:
        raise UsageError("--rows-per-request and --workers must be >= 1")
    try:
        policy = parse_policy(DEFAULT_POLICY if args.policy.strip() == "dynamic" else args.policy)
    except ValueError as exc:
        raise UsageError(f"--policy: {exc}") from None
    try:
        recipes = [parse(text) for text in args.recipe or []]
    except ValueError as exc:
        raise UsageError(f"--recipe: {' '.join(str(exc).split())}") from None
    if args.study is not None:
        recommended = recommended_recipe(Path(args.study), args.max_p99_ms, args.max_quality_drop)
        recipes = [recommended] + [r for r in recipes if r != recommended]
    return model, inputs, policy, recipes


def recommended_recipe(study_out: Path, max_p99_ms: float, max_quality_drop: float | None):
    """The recipe a stored study recommends under the SLA (read from its results.csv, through the
    study's own `frontier.recommend`); a one-line UsageError when there is none."""
    import pandas as pd  # on use: this parser is built for every optlab command

    results = study_out / "results.csv"
    if not results.is_file():
        raise UsageError(f"--study {study_out}: no results.csv there; pass the --out folder of `optlab study`")
    frame = pd.read_csv(results)
    try:
        choice = recommend(frame, max_p99_ms=max_p99_ms, max_quality_drop=max_quality_drop)
    except ValueError as error:
        raise UsageError(f"--study {study_out}: {' '.join(str(error).split())}") from None
    if not choice.met or choice.candidate is None:
        raise UsageError(f"--study {study_out}: {choice.explanation}")
    row = choice.row
    if not isinstance(row.get("recipe_json"), str) or '"kind": "baseline"' in row["recipe_json"]:
        raise UsageError(f"--study {study_out}: it recommends the model as given ({choice.candidate}), which "
                         f"serve-bench serves anyway")
    return from_json(row["recipe_json"])


def _candidates(model: Path, inputs: Path, recipes) -> tuple[list, object]:
    """The model as given (ONNX Runtime, 1 thread) and one candidate per recipe, with the inputs as data."""
    calibrates = any(getattr(recipe, "scheme", "") == "static-int8" for recipe in recipes)
    try:
        with warnings.catch_warnings():
            if not calibrates:  # its advice is about static int8 only
                warnings.simplefilter("ignore", CalibrationOnBenchmarkData)
            baseline, data = from_onnx(model, str(inputs), threads=1)
    except (ValueError, FileNotFoundError, TypeError) as error:
        raise UsageError(" ".join(str(error).split())) from None
    return [baseline] + [apply(recipe, baseline.model, data, threads=1) for recipe in recipes], data


def run_command(args: argparse.Namespace) -> int:
    # on use, not at the top: `cli.main` builds this parser for every optlab command, and these import
    # pandas (the SLA search, the load generator) and altair (the charts)
    import pandas as pd

    from optlab.serving.loadgen import generator_headroom
    from optlab.serving.sla import SlaSearch, server_probe, throughput_at_sla
    from optlab.views import rendering, serving_charts

    model, inputs, policy, recipes = _checked(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    candidates, data = _candidates(model, inputs, recipes)
    payloads = single_rows(data, 2000, rows=args.rows_per_request)
    for candidate in candidates:
        candidate.predict(payloads[0])  # fails here, before any load, if the inputs do not fit the model
    headroom, _ = generator_headroom(sla_ms=args.max_p99_ms, probe_s=0.3 if args.smoke else 1.0,
                                     start_per_s=2000 if args.smoke else 500, min_per_s=500 if args.smoke else 50)
    print(f"generator headroom (no-op server, p99 <= {0.1 * args.max_p99_ms:g} ms): {headroom:.0f}/s")
    search = SlaSearch(max_p99_ms=args.max_p99_ms, probe_s=0.3 if args.smoke else 1.5,
                       rel_tol=0.5 if args.smoke else 0.08, start_per_s=1000.0, max_probes=3 if args.smoke else 16,
                       confirm_failures=0 if args.smoke else 1)
    table, curves = [], []
    for candidate in candidates:
        for chosen in dict.fromkeys([NoBatching(), policy]):
            def make(chosen=chosen, candidate=candidate):
                return Server(candidate, chosen, workers=args.workers)
            result = throughput_at_sla(server_probe(make, payloads, search, headroom_per_s=headroom), search)
            label = chosen.name if len(candidates) == 1 else f"{candidate.name} / {chosen.name}"
            table.append({"candidate": candidate.name, "policy": chosen.name, "label": label,
                          "workers": args.workers, **result.row(),
                          "above_half_headroom": result.throughput_per_s > headroom / 2})
            curves.append(result.curve.assign(label=label))
    frame = pd.DataFrame(table).sort_values("throughput_at_sla_per_s", ascending=False, kind="stable")
    curve = pd.concat(curves, ignore_index=True)
    frame.to_csv(out / "serve_bench.csv", index=False)
    curve.to_csv(out / "latency_vs_load.csv", index=False)
    charts = [serving_charts.latency_vs_load(curve, max_p99_ms=args.max_p99_ms),
              serving_charts.throughput_at_sla(frame, label="label")]
    for name, chart in zip(("latency_vs_load", "throughput_at_sla"), charts, strict=True):
        (out / f"{name}.svg").write_text(rendering.to_svg(chart))
    (out / "report.html").write_text(_report(frame, charts, model.name, args.max_p99_ms, headroom))
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(frame[["candidate", "policy", "workers", "throughput_at_sla_per_s", "p99_at_sla_load_ms", "sla_met",
                     "probes", "note"]].to_string(index=False))
    if not frame["sla_met"].any():
        best = frame.loc[frame["p99_at_sla_load_ms"].idxmin()]
        print(f"nothing meets p99 <= {args.max_p99_ms:g} ms; the closest is {best['label']} with p99 "
              f"{best['p99_at_sla_load_ms']:.3g} ms: raise --max-p99-ms or try --recipe / another --policy")
    print(f"results: {out / 'serve_bench.csv'}\nreport: {out / 'report.html'}")
    return 0


def _report(frame, charts, model: str, max_p99_ms: float, headroom: float) -> str:
    """A self-contained page: the table, then each chart's own HTML (altair's, offline-capable) in a frame."""
    from optlab.views import rendering  # on use: altair

    parts = [f"<h1>Serving {html.escape(model)} at p99 &lt;= {max_p99_ms:g} ms</h1>",
             f"<p>Generator headroom (no-op server): {headroom:.0f} requests/s; figures above half of it carry "
             "the generator's own delay.</p>", frame.to_html(index=False)]
    parts += [rendering.svg_img(chart) for chart in charts]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>optlab serve-bench</title></head><body>"
            + "\n".join(parts) + "</body></html>")
