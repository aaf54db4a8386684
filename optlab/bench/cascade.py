"""`python -m optlab.bench cascade [--smoke] [--datasets digits,intents,bids] [--expensive baseline|onnxruntime]`

Small model first: per dataset, a cascade whose cheap model (the zoo teacher distilled into its student,
run on ONNX Runtime; bids' student trained for `STUDENT_EPOCHS`, see there) answers every request and
sends the rows it is unsure of (top-1 probability for classes; for the click model, the distance of
P(click) from the decision threshold) to the expensive model (the teacher: the study's baseline, torch
eager fp32, or with `--expensive onnxruntime` the same teacher on ONNX Runtime, so the gain is the
cascade's and not the runtime's). The threshold is chosen on the validation split (no validation quality
lost against the expensive model); the sweep times single-row requests interleaved with both models
alone on the test split. For the click model the bench also says, on validation, whether the two models
rank alike and on one scale (`score_agreement`): a cascade of AUC ranks kept rows by one model and sent
rows by the other.

The target, per dataset: at the threshold chosen on validation, the cascade's test quality lies within
the expensive model's 95% interval (at or above its low end) at >= 2x lower mean latency and cost per
1M requests than the expensive model alone.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from optlab.bench import routing, two_stage
from optlab.bench.render import Col, Layout, Renderer, target, times, verdict
from optlab.bench.techniques import cpu_flags
from optlab.data.datasets import load
from optlab.instruments.quality import predict_split
from optlab.models import zoo
from optlab.models.runtimes import quiet_torch_logs
from optlab.recipes.cascade import Cascade
from optlab.recipes.recipe import Chain, Compile, Distill
from optlab.study.cascade import CASCADE, EXPENSIVE, score_agreement, threshold_sweep
from optlab.techniques.registry import apply

COMMAND = "python -m optlab.bench cascade"
THREADS = 1  # one request at a time on one thread: the cores are shared, and a request is tiny
SPEEDUP_TARGET = 2.0
# The student's training epochs where the zoo's budget (the teacher's own) leaves it short, chosen on the
# validation split. bids: the click student (4.5x fewer parameters) after the teacher's 3 epochs ranked unlike it
# (validation AUC 0.7877 vs the teacher's 0.7921, Spearman 0.979 with the teacher's scores), and a cascade,
# which mixes the two models' scores, recovered AUC only in proportion to the rows sent on: 90.5% went on and
# the cascade was slower than the teacher alone. Validation AUC by epochs: 3 0.7877, 5 0.7918, 8 0.7923,
# 12 0.7924 (Spearman 0.979, 0.994, 0.997, 0.997): 8, where it levels off.
STUDENT_EPOCHS = {"bids": 8}
SETTINGS = {True: dict(timed_rows=256, rounds=4, turn_s=0.03, n_boot=300),
            False: dict(timed_rows=1024, rounds=8, turn_s=0.1, n_boot=1000)}

LAYOUT = Layout((
    Col("model", "model", 16, "<"),
    Col("threshold", "threshold", 10, spec=".6f"),
    Col("escalated_share", "sent on", 8, spec=".1%"),
    Col("timed_escalated_share", "timed", 7, spec=".1%"),
    Col("quality", "quality [95% CI]", 24, text=lambda r: f"{r['quality']:.4f} [{r['quality_ci_low']:.4f}, "
                                                         f"{r['quality_ci_high']:.4f}]"),
    Col("quality_drop", "drop vs expensive", 18, spec="+.4f"),
    Col("mean_ms", "mean ms", 9, spec=".4f"),
    Col("p50_ms", "p50 ms", 8, spec=".4f"),
    Col("p99_ms", "p99 ms", 8, spec=".3f"),
    Col("cost_per_1m_usd", "$ per 1M", 10, spec=".5f"),
    Col("chosen", "", 9, text=lambda r: "  <- chosen" if r["chosen"] else ""),
), indent="  ")


def recipe_for(data: Any, expensive: str) -> Cascade:
    """The dataset's cascade: a distilled student on ONNX Runtime first (trained for `STUDENT_EPOCHS`
    where given); the click model's decision threshold is the training split's click rate (never the
    test split's)."""
    cheap = Chain(Distill(epochs=STUDENT_EPOCHS.get(data.name)), Compile())
    other = None if expensive == "baseline" else Compile()
    if data.task == "binary":
        rate = round(float(data.train.labels.mean()), 3)
        return Cascade(cheap=cheap, expensive=other, confidence="distance", decision=rate, max_quality_drop=0.0)
    return Cascade(cheap=cheap, expensive=other, confidence="top1", max_quality_drop=0.0)


def build(name: str, smoke: bool, workdir: Path, expensive: str,
          progress: Callable[[str], None] = lambda _line: None) -> tuple[Any, Any]:
    """`name`'s data and its cascade candidate (threshold chosen on validation)."""
    data = load(name, smoke=smoke)
    teacher = zoo.get(name, smoke=smoke, data=data)
    recipe = recipe_for(data, expensive)
    candidate = apply(recipe, teacher, data, threads=THREADS, workdir=workdir / name)
    progress(f"  {name}: {recipe.name} built in {candidate.meta.get('apply_s', 0):.1f}s; threshold "
             f"{candidate.meta['threshold']:.4f} sends {candidate.meta['validation_escalated_share']:.1%} of the "
             f"validation rows on")
    if data.task == "binary":  # a ranking metric: say whether the two models rank alike, on one scale
        cheap, expensive = candidate.parts
        agree = score_agreement(predict_split(cheap, data.validation), predict_split(expensive, data.validation))
        progress(f"  {name}: on validation the cheap model's AUC {candidate.meta['validation_cheap_quality']:.4f} vs "
                 f"the expensive model's {candidate.meta['validation_expensive_quality']:.4f}; Spearman rank "
                 f"correlation of their scores {agree['spearman']:.4f}; expensive logit ~ "
                 f"{agree['scale_slope']:.3f} x cheap logit {agree['scale_intercept']:+.3f}")
    return data, candidate


def run_dataset(name: str, smoke: bool, workdir: Path, expensive: str,
                progress: Callable[[str], None] = lambda _line: None, built: tuple[Any, Any] | None = None
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The sweep's table for `name` (a `dataset` column added) and what the cascade recorded."""
    data, candidate = built or build(name, smoke, workdir, expensive, progress)
    sweep = threshold_sweep(candidate, data, threads=THREADS, **SETTINGS[smoke])
    return sweep.table.assign(dataset=name), candidate.meta


def _ratio(times_lower: float) -> str:
    """"2.37x lower", or "1.84x higher" when the cascade is the slower one."""
    if not times_lower > 0:
        return "n/a"
    return f"{times(times_lower)} lower" if times_lower >= 1 else f"{times(1 / times_lower)} higher"


def judge(table: pd.DataFrame, name: str) -> dict[str, Any]:
    """The target row of one dataset: the chosen threshold against the expensive model alone."""
    rows = table[table["dataset"] == name]
    chosen, alone = rows[rows["chosen"] & (rows["model"] == CASCADE)], rows[rows["model"] == EXPENSIVE]
    if chosen.empty or alone.empty:
        return target(f"[{name}] cascade vs expensive alone", None, None, COMMAND,
                      f"[{name}] n/a: the sweep has no chosen threshold or no expensive-model row")
    c, e = chosen.iloc[0], alone.iloc[0]
    speedup, cheaper = e["mean_ms"] / c["mean_ms"], e["cost_per_1m_usd"] / c["cost_per_1m_usd"]
    within = bool(c["quality"] >= e["quality_ci_low"])  # at or above the interval's low end: no worse
    met = bool(within and speedup >= SPEEDUP_TARGET and cheaper >= SPEEDUP_TARGET)
    where = "below" if not within else "within" if c["quality"] <= e["quality_ci_high"] else "above"
    note = (" (the cheap model alone was already as good on validation: nothing is sent on)"
            if c["escalated_share"] == 0 else "")
    sentence = (f"[{name}] {verdict(met)}: threshold {c['threshold']:.6f} (chosen on validation) sends "
                f"{c['escalated_share']:.1%} of test requests on; {c['metric']} {c['quality']:.4f} {where} the "
                f"expensive model's 95% interval [{e['quality_ci_low']:.4f}, {e['quality_ci_high']:.4f}]; mean "
                f"latency {c['mean_ms']:.4f} vs {e['mean_ms']:.4f} ms ({_ratio(speedup)}), cost per 1M "
                f"${c['cost_per_1m_usd']:.5f} vs ${e['cost_per_1m_usd']:.5f} ({_ratio(cheaper)}); target: within "
                f"or above, >= {SPEEDUP_TARGET:g}x lower both{note}")
    return target(f"[{name}] cascade: quality within the expensive model's interval at >= 2x lower mean latency "
                  f"and cost", float(min(speedup, cheaper)), met, COMMAND, sentence)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND)
    parser.add_argument("--smoke", action="store_true", help="smoke data and short timings")
    parser.add_argument("--datasets", default="digits,intents,bids")
    parser.add_argument("--expensive", choices=("baseline", "onnxruntime"), default="baseline",
                        help="the expensive model: the teacher as the study's baseline (torch eager fp32), or the "
                             "same teacher on ONNX Runtime")
    parser.add_argument("--two-stage", default="digits", metavar="DATASET",
                        help="the dataset whose cascade is served two-stage vs the expensive model alone "
                             "('none': skip)")
    parser.add_argument("--routing-rate", type=float, default=6.0,
                        help="requests/s of the mixed trace in the routing section (0: skip the section)")
    parser.add_argument("--cores", type=int, default=None,
                        help="the core budget the serving sections split (default: this process's CPU affinity)")
    parser.add_argument("--json", default=None, help="write the tables and targets to this file")
    args = parser.parse_args(argv)
    out = Renderer("cascade", " ".join([COMMAND, *argv]))
    workdir = Path(tempfile.mkdtemp(prefix="optlab-bench-cascade-"))
    tables, built = [], {}
    with quiet_torch_logs():
        for name in args.datasets.split(","):
            built[name] = build(name, args.smoke, workdir, args.expensive, out.progress)
            table, _meta = run_dataset(name, args.smoke, workdir, args.expensive, out.progress, built[name])
            tables.append(table)
            out.say(f"\n{name}: single-row requests, {table['metric'].iloc[0]} on the test split "
                    f"({'smoke' if args.smoke else 'full'} data)")
            out.table(f"sweep_{name}", LAYOUT, table.to_dict("records"))
    table = pd.concat(tables, ignore_index=True)
    out.keep("sweep", table)
    import torch  # on use: only to print its version (it is loaded by now)

    out.say(f"\nCPU: {platform.processor() or platform.machine()}, flags: {cpu_flags()}; threads={THREADS}; "
            f"torch {torch.__version__}; expensive={args.expensive}; smoke={args.smoke}. Latency is timed "
            f"interleaved with both models alone; cost per 1M follows mean latency (single-row requests served "
            f"one after another at one price), so the two ratios agree." + (
                " The cheap model runs on ONNX Runtime and the expensive one in torch eager: part of any gain is "
                "the runtime's; --expensive onnxruntime puts both on one runtime." if args.expensive == "baseline"
                else ""))
    out.say("\ntargets (ratios from the same run; others share these cores, so expect noise):")
    out.targets([judge(table, name) for name in args.datasets.split(",")], indent="  ")
    if args.two_stage != "none":
        name = args.two_stage
        with quiet_torch_logs():
            data, candidate = built.get(name) or build(name, args.smoke, workdir, args.expensive, out.progress)
            two_stage.section(out, name, candidate, data, args.smoke, args.cores)
    if args.routing_rate > 0:
        with quiet_torch_logs():
            routing.section(out, args.smoke, args.routing_rate)
    out.write_json(args.json)
    return 0
