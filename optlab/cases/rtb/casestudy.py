"""The real-time-bidding case study, step by step: each function is one step of the notebook and of
`python -m optlab.bench rtb`, and hands back a DataFrame (or a small result) to print or draw.

1. `build`: the bids data, the click model (eager fp32 baseline), the optimized candidates (ONNX
   Runtime dynamic int8 and ONNX Runtime fp32 with graph optimizations, one thread each), the one
   chosen (fastest per row at batch 64 among those within the quality gate), and the three
   deployments (`deployments.NAIVE`, `REASONABLE`, `OPTIMIZED`).
2. `quality_table`: AUC, its drop against the baseline with a 95% interval, log-loss, calibration
   (ECE, mean predicted vs observed click rate), worst slice; the gate: AUC drop <= 0.005,
   log-loss +<= 1%.
3. `profiles`: where one request's time goes (decode, preprocess, model, respond), per deployment.
4. `goodput`: throughput at p99 <= 10 ms, in process (same decoding, preprocessing, server and
   batching as over HTTP, without the sockets) or over HTTP (the deployment in its own process,
   load over real sockets from the open-loop generator), and the HTTP stack's own ceiling.
5. `burst`: the steady load, then 3x, then back, against the optimized deployment.
6. `plan_for` (in `plan`): the day's capacity plan from service times measured over HTTP at its
   own operating point, the simulator's p99 there beside the measured one (`validate_simulator`:
   the same check in process, one model thread).
7. `costs`, `recommendation`: cost per million bids and per month, in an agency's words.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from optlab.cases.rtb import service as http
from optlab.cases.rtb.advice import recommendation  # noqa: F401 - step 7, named here for callers
from optlab.cases.rtb.campaign import (  # noqa: F401 - the case study's steps, one import for its callers
    HOURS_PER_MONTH,
    PRICE_PER_HOUR_USD,
    SLA_MS,
    TARGET_UTILISATION,
    DayTraffic,
    campaign,
    capacity_plan,
    costs,
    machines_for,
)
from optlab.cases.rtb.deployments import NAIVE, OPTIMIZED, REASONABLE, BidSchema, Deployment, InProcess, pick_model
from optlab.cases.rtb.plan import (  # noqa: F401 - step 6, named here for callers
    CampaignPlan,
    OperatingPoint,
    http_service_times,
    operating_point,
    plan_for,
    service_samples,
    validate_simulator,
)
from optlab.instruments.pipeline import Stage, profile
from optlab.serving import loadgen
from optlab.serving.schedules import Burst, Poisson
from optlab.serving.sla import SlaSearch, server_probe, throughput_at_sla
from optlab.study.columns import NOT_AVAILABLE, not_available

MAX_AUC_DROP, MAX_LOGLOSS_RISE = 0.005, 0.01


@dataclass
class Case:
    data: Any
    schema: BidSchema
    baseline: Any
    candidates: dict[str, Any]
    chosen: str
    deployments: dict[str, Deployment]
    smoke: bool
    timings: pd.DataFrame = field(default_factory=pd.DataFrame)
    evaluations: dict[str, Any] = field(default_factory=dict)
    full: bool = True  # False: the workshop's shorter run (one optimized candidate, coarser searches)


def build(smoke: bool = False, seed: int = 0, *, full: bool = True) -> Case:
    """Data, models and the three deployments (the optimized one on the chosen candidate).
    Two candidates: dynamic int8 and ONNX Runtime's graph-optimized fp32 (the reasonable step's model).
    `full=False` (the workshop's default) makes the case's searches coarser (`search`)."""
    from optlab.data.datasets import load
    from optlab.instruments.timing import summarize, time_calls
    from optlab.models import zoo
    from optlab.recipes.recipe import Compile, Quantize
    from optlab.serving.server import concat
    from optlab.techniques.registry import apply

    data = load("bids", smoke=smoke)
    baseline = zoo.baseline(zoo.get("bids", data=data, smoke=smoke, seed=seed))
    candidates = {}
    # the graph-optimized fp32 candidate is the reasonable step's model, so every mode builds it (seconds)
    recipes = (Quantize("dynamic-int8", runtime="onnxruntime"), Compile(runtime="onnxruntime"))
    for recipe in recipes:
        candidate = apply(recipe, zoo.get("bids", data=data, smoke=smoke, seed=seed), data, threads=1)
        candidates[candidate.name] = candidate
    schema = BidSchema.from_data(data)
    rows = [{k: v[i:i + 1] for k, v in data.test.inputs.items()} for i in range(64)]
    timings = []
    for name, candidate in {"baseline": baseline, **candidates}.items():
        for size in (1, 64):
            batch = concat(rows[:size])[0]
            stats = summarize(time_calls(candidate.predict, [batch], budget_s=0.3 if smoke else 1.0).samples_ns)
            timings.append({"candidate": name, "batch": size, "p50_us": stats.p50_ms * 1e3,
                            "p50_us_per_row": stats.p50_ms * 1e3 / size})
    timings = pd.DataFrame(timings)
    case = Case(data, schema, baseline, candidates, "", {}, smoke, timings, full=full)
    quality = quality_table(case, include_deployments=False).set_index("candidate")
    passing = [n for n in candidates if quality.loc[n, "within_gate"]]
    per_row = timings[timings["batch"] == 64].set_index("candidate")["p50_us_per_row"]
    case.chosen = min(passing or candidates, key=lambda n: per_row[n])
    case.deployments = {c.name: Deployment(c, pick_model(c, baseline, candidates, case.chosen), schema)
                        for c in (NAIVE, REASONABLE, OPTIMIZED)}
    return case


def quality_table(case: Case, include_deployments: bool = True) -> pd.DataFrame:
    """One row per candidate (or per deployment): AUC, drop with its interval, log-loss, calibration."""
    from optlab.instruments.quality import evaluate

    named = ({d.name: d.candidate for d in case.deployments.values()} if include_deployments
             else {"baseline": case.baseline, **case.candidates})
    n_boot = 200 if case.smoke else 1000
    memo = case.evaluations  # each candidate is evaluated once per case (a candidate's name says what it is)
    if "" not in memo:
        memo[""] = evaluate(case.baseline, case.data, n_boot=n_boot)
    base = memo[""]
    rows = []
    for name, candidate in named.items():
        if candidate.name not in memo:
            memo[candidate.name] = evaluate(candidate, case.data, case.baseline, n_boot=n_boot)
        q = memo[candidate.name]
        logloss_rise = q.logloss / base.logloss - 1
        drop = q.quality_drop or 0.0
        rows.append({"candidate" if not include_deployments else "deployment": name, "model": candidate.name,
                     "auc": q.auc, "auc_drop": drop, "auc_drop_ci_low": q.quality_drop_ci_low,
                     "auc_drop_ci_high": q.quality_drop_ci_high, "logloss": q.logloss,
                     "logloss_rise": logloss_rise, "ece": q.ece, "mean_pctr": q.mean_predicted,
                     "observed_ctr": q.observed_rate, "agreement": q.agreement, "worst_slice": q.worst_slice,
                     "worst_slice_drop": q.worst_slice_drop,
                     "within_gate": bool(drop <= MAX_AUC_DROP and logloss_rise <= MAX_LOGLOSS_RISE)})
    return pd.DataFrame(rows)


def profiles(case: Case, n: int = 300) -> pd.DataFrame:
    """Per deployment, one request at a time through decode -> preprocess -> model -> respond."""
    frames = []
    for deployment in case.deployments.values():
        bodies = deployment.bodies(case.data.test, n, seed=1)
        payload, candidate = deployment.payload, deployment.candidate
        stages = [Stage("decode", payload.decode), Stage("preprocess", deployment.preprocess),
                  Stage("model", candidate.predict),
                  Stage("respond", lambda logits, enc=payload.encode: enc({"logit": float(np.ravel(logits)[0])}))]
        frames.append(profile(stages, bodies, repeats=1 if case.smoke else 3).assign(deployment=deployment.name))
    return pd.concat(frames, ignore_index=True)[["deployment", "stage", "p50_ms", "p99_ms", "mean_ms",
                                                  "share_of_total", "samples"]]


def search(smoke: bool, full: bool = True) -> SlaSearch:
    """Full: bracket and bisect to 10% (16 probes at most: from 400/s the optimized deployment's
    bracket alone takes 8, and a failing rate is probed twice). Workshop (`full=False`): bracket and bisect to 25% in at
    most 6 one-second probes. Smoke: one probe at 1,000/s (a pass is a lower bound)."""
    if smoke:
        return SlaSearch(max_p99_ms=SLA_MS, probe_s=0.3, start_per_s=1000.0, max_probes=1)
    if not full:
        return SlaSearch(max_p99_ms=SLA_MS, probe_s=1.0, rel_tol=0.25, start_per_s=400.0, max_probes=6)
    return SlaSearch(max_p99_ms=SLA_MS, probe_s=1.5, rel_tol=0.1, start_per_s=400.0, max_probes=16)


def goodput(case: Case, name: str, transport: str = "in_process", *, port: int | None = None,
            connections: int = 8) -> dict[str, Any]:
    """Throughput at p99 <= 10 ms of deployment `name` (or "constant": the HTTP stack's ceiling)."""
    sla = search(case.smoke, case.full)
    if name == "constant":
        deployment = case.deployments["reasonable"]
    else:
        deployment = case.deployments[name]
    bodies = deployment.bodies(case.data.test, 2000, seed=2)
    if transport == "in_process":
        make = lambda: InProcess(deployment)  # noqa: E731
    elif transport == "http":
        path = "/constant" if name == "constant" else http.ROUTES[deployment.config.payload]
        make = lambda: http.HttpTarget(port, path, connections=connections,  # noqa: E731
                                       content_type=deployment.payload.content_type)
    else:
        raise ValueError(f"transport must be 'in_process' or 'http', got {transport!r}")
    result = throughput_at_sla(server_probe(make, bodies, sla), sla)
    return {"deployment": name, "transport": transport, **result.row(), "curve": result.curve}


def goodput_over_http(case: Case, names=None, rounds: int = 1) -> pd.DataFrame:
    """Each deployment in its own service process, plus the constant endpoint, over real sockets;
    also the measured cold start of each service process (spawn to first healthy answer).
    With `rounds` > 1 the deployments are measured in interleaved rounds and the median round is
    kept (a stall of a shared machine hits one round, not one deployment; the best round would
    flatter), with every round in `rounds_per_s`.
    Smoke runs only the optimized deployment and the constant endpoint; the workshop run
    (`case.full` False) naive and optimized."""
    names = names or (("optimized",) if case.smoke else ("naive", "reasonable", "optimized") if case.full
                      else ("naive", "optimized"))
    rows = []
    for r in range(rounds):
        for name in names:
            deployment = case.deployments[name]
            started = time.monotonic()
            with http.start(spec=http.deployment_spec(deployment), mode="process", startup_s=120) as service:
                cold_start_s = time.monotonic() - started
                row = goodput(case, name, "http", port=service.port)
                stats = {k: v for k, v in service.get("/stats").items() if k != "service_ms"}
                rows.append({**row, "cold_start_s": cold_start_s, "stats": stats, "round": r})
                if name == names[-1]:  # the constant endpoint of the same process: its cold start is this one's
                    rows.append({**goodput(case, "constant", "http", port=service.port), "round": r,
                                 "cold_start_s": cold_start_s})
    return median_rounds(pd.DataFrame(rows))


def median_rounds(runs: pd.DataFrame) -> pd.DataFrame:
    """The median round per deployment (in first-seen order; the lower one of an even count),
    with every round's figure in `rounds_per_s`."""
    order = list(dict.fromkeys(runs["deployment"]))
    picked = []
    for name in order:
        mine = runs[runs["deployment"] == name].sort_values("throughput_at_sla_per_s", kind="stable")
        row = mine.iloc[(len(mine) - 1) // 2].copy()
        row["rounds_per_s"] = ", ".join(f"{v:.0f}" for v in runs.loc[runs["deployment"] == name,
                                                                       "throughput_at_sla_per_s"])
        picked.append(row)
    return pd.DataFrame(picked).reset_index(drop=True)


def best_rounds(runs: pd.DataFrame) -> pd.DataFrame:
    """Deprecated: the best round flatters a deployment; `median_rounds` keeps the median one."""
    warnings.warn("best_rounds is deprecated: use median_rounds (the best round flatters a deployment)",
                  DeprecationWarning, stacklevel=2)
    order = list(dict.fromkeys(runs["deployment"]))
    best = runs.loc[runs.groupby("deployment", sort=False)["throughput_at_sla_per_s"].idxmax()].set_index("deployment")
    best["rounds_per_s"] = [", ".join(f"{v:.0f}" for v in runs.loc[runs["deployment"] == d, "throughput_at_sla_per_s"])
                            for d in best.index]
    return best.loc[order].reset_index()


def steady_rate(goodputs: pd.DataFrame, name: str = "optimized", share: float = 0.5) -> float:
    """The burst's steady load: `share` of `name`'s throughput at the SLA, or, when no probe met the
    SLA (a loaded machine), `share` of the lowest probe's achieved rate."""
    row = goodputs.set_index("deployment").loc[name]
    if row["throughput_at_sla_per_s"] > 0:
        return share * float(row["throughput_at_sla_per_s"])
    curve = row["curve"]
    return share * float(curve.sort_values("offered_per_s")["achieved_per_s"].iloc[0])


def burst(case: Case, steady_per_s: float, *, factor: float = 3.0) -> loadgen.LoadResult:
    """Steady load, `factor` x for a while, back: the optimized deployment must keep p99 or shed, counted."""
    span = 0.5 if case.smoke else 3.0
    deployment = case.deployments["optimized"]
    load = Burst(steady_per_s, factor, steady_s=span, burst_s=span, after_s=span)
    return loadgen.run(InProcess(deployment), deployment.bodies(case.data.test, 2000, seed=3), load,
                       series_bin_s=0.25 if case.smoke else 0.5, label="optimized, burst")


def service_run(case: Case, name: str, rate_per_s: float) -> loadgen.LoadResult:
    """A steady Poisson run of deployment `name` in process at a moderate `rate_per_s`."""
    deployment = case.deployments[name]
    n = 700 if case.smoke else 5000
    return loadgen.run(InProcess(deployment), deployment.bodies(case.data.test, 2000, seed=5),
                       Poisson(rate_per_s, duration_s=max(0.5, n / rate_per_s)), label=f"{name}, steady")


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for a person: a missing or infinite figure reads "not available" (its row's `note`
    says why); never NaN or inf."""
    return frame.astype(object).map(lambda v: not_available(v, NOT_AVAILABLE) or v)  # study.columns' one rule
