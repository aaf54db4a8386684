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
6. `validate_simulator`, `capacity_plan`: the simulator against a measured run, then a day.
7. `costs`, `recommendation`: cost per million bids and per month, in an agency's words.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
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
from optlab.cases.rtb.deployments import NAIVE, OPTIMIZED, REASONABLE, BidSchema, Deployment, InProcess
from optlab.instruments.pipeline import Stage, profile
from optlab.serving import capacity, loadgen
from optlab.serving.schedules import Burst, Poisson
from optlab.serving.sla import SlaSearch, server_probe, throughput_at_sla

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


def build(smoke: bool = False, seed: int = 0) -> Case:
    """Data, models and the three deployments (the optimized one on the chosen candidate)."""
    from optlab.data.datasets import load
    from optlab.instruments.timing import summarize, time_calls
    from optlab.models import zoo
    from optlab.recipes.recipe import Compile, Quantize
    from optlab.serving.server import concat
    from optlab.techniques.registry import apply

    data = load("bids", smoke=smoke)
    baseline = zoo.baseline(zoo.get("bids", data=data, smoke=smoke, seed=seed))
    candidates = {}
    recipes = (Quantize("dynamic-int8", runtime="onnxruntime"),) + (() if smoke else (Compile(runtime="onnxruntime"),))
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
    case = Case(data, schema, baseline, candidates, "", {}, smoke, timings)
    quality = quality_table(case, include_deployments=False).set_index("candidate")
    passing = [n for n in candidates if quality.loc[n, "within_gate"]]
    per_row = timings[timings["batch"] == 64].set_index("candidate")["p50_us_per_row"]
    case.chosen = min(passing or candidates, key=lambda n: per_row[n])
    case.deployments = {c.name: Deployment(c, baseline if c.name != "optimized" else candidates[case.chosen], schema)
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


def search(smoke: bool) -> SlaSearch:
    """Full: bracket and bisect to 10%. Smoke: one probe at 1,000/s (a pass is a lower bound)."""
    if smoke:
        return SlaSearch(max_p99_ms=SLA_MS, probe_s=0.3, start_per_s=1000.0, max_probes=1)
    return SlaSearch(max_p99_ms=SLA_MS, probe_s=1.5, rel_tol=0.1, start_per_s=400.0, max_probes=12)


def goodput(case: Case, name: str, transport: str = "in_process", *, port: int | None = None,
            connections: int = 8) -> dict[str, Any]:
    """Throughput at p99 <= 10 ms of deployment `name` (or "constant": the HTTP stack's ceiling)."""
    sla = search(case.smoke)
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
    With `rounds` > 1 the deployments are measured in interleaved rounds and the best round is
    kept (a stall of a shared machine hits one round, not one deployment); `rounds_per_s` lists all.
    Smoke runs only the optimized deployment and the constant endpoint."""
    names = names or (("optimized",) if case.smoke else ("naive", "reasonable", "optimized"))
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
    return best_rounds(pd.DataFrame(rows))


def best_rounds(runs: pd.DataFrame) -> pd.DataFrame:
    """The best round per deployment (in first-seen order), with every round's figure in `rounds_per_s`."""
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


def service_samples(result: loadgen.LoadResult) -> np.ndarray:
    """Per-request service seconds from a run: a call's time shared by the requests in it."""
    frame = result.requests
    served = frame[(frame["status"] == "ok") & (frame["batch_size"] > 0)]
    return (served["service_ms"] / served["batch_size"]).to_numpy() / 1e3


@dataclass
class OperatingPoint:
    """A deployment measured over HTTP, in its own process, at the rate one machine carries in the plan.

    `samples_s`: per-request service times there, the server's model-call shares scaled to the
    process's CPU seconds per request at that point (the whole serving path: parsing, framework,
    codec and model, not only the model call); `summary`: the client's figures at that rate
    (its p99 is what the plan's simulated p99 at this utilisation should be near)."""

    deployment: str
    rate_per_s: float
    samples_s: np.ndarray
    cpu_per_request_ms: float
    model_share: float  # the model calls' share of the process's CPU per request
    summary: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "rate_per_s": self.rate_per_s,
                "cpu_per_request_ms": self.cpu_per_request_ms, "model_share": self.model_share,
                "measured_p99_ms": self.summary["p99_ms"], "requests": self.summary["requests"],
                "shed": self.summary["shed"]}


def operating_point(case: Case, name: str, rate_per_s: float, *, connections: int = 8) -> OperatingPoint:
    """Deployment `name` in its own service process under Poisson load at `rate_per_s` over HTTP:
    the service-time shape and the CPU per request where the plan runs each machine."""
    deployment = case.deployments[name]
    bodies = deployment.bodies(case.data.test, 2000, seed=5)
    n = 700 if case.smoke else 5000
    with http.start(spec=http.deployment_spec(deployment), mode="process", startup_s=120) as service:
        before = service.get("/stats")
        target = http.HttpTarget(service.port, http.ROUTES[deployment.config.payload], connections=connections,
                                 content_type=deployment.payload.content_type)
        result = loadgen.run(target, bodies, Poisson(rate_per_s, duration_s=max(0.5, n / rate_per_s)),
                             label=f"{name} at {rate_per_s:,.0f}/s over HTTP")
        after = service.get("/stats")
    served = after["server"]["ok"] - before["server"]["ok"]
    model_s = np.asarray(after["service_ms"][-served:] if served else [], np.float64) / 1e3
    if served < 10 or not np.isfinite(model_s).all() or model_s.sum() <= 0:
        raise RuntimeError(f"{name} served {served} requests at {rate_per_s:,.0f}/s over HTTP: too few to describe "
                           "a replica; the machine may be too busy, re-run on a quieter one")
    cpu_per_request_s = (after["cpu_s"] - before["cpu_s"]) / served
    model_share = float(model_s.mean() / cpu_per_request_s) if cpu_per_request_s > 0 else 1.0
    samples = model_s * (cpu_per_request_s / model_s.mean()) if cpu_per_request_s > model_s.mean() else model_s
    return OperatingPoint(name, rate_per_s, samples, cpu_per_request_s * 1e3, min(model_share, 1.0), result.summary)


def validate_simulator(case: Case, name: str, utilisation: float = 0.3, *, seed: int = 0) -> dict[str, Any]:
    """A measured run of one-at-a-time deployment `name` near `utilisation` against the request-level
    simulation (M/G/1) of the same rate with the run's own service times.

    The simulator models the queue; what the queue does not explain (the generator's send lag, the
    decoding and preprocessing before the server, a worker's wake-up) is measured in the same run:
    each request's latency minus its service minus its Lindley wait (its queueing wait replayed from
    the measured arrivals and service times), and added to the simulated responses by sampling.
    Near saturation the model breaks down in process: decoding and preprocessing run in the
    generator's receiving thread, a second stage sharing the interpreter lock with the worker,
    which the one-queue model leaves out."""
    from optlab.serving.queueing import lindley_waits

    deployment = case.deployments[name]
    if deployment.config.batching.max_batch != 1 or deployment.config.workers != 1:
        raise ValueError("validate the simulator on a one-worker deployment without batching (naive or reasonable)")
    # one model thread: the same deployment without torch's second thread, whose spin-waits on a
    # shared 2-core machine add stalls that belong to the machine, not to the queue
    deployment = Deployment(replace(deployment.config, name=f"{name}, 1 thread", threads_per_worker=1),
                            deployment.candidate, deployment.schema)
    bodies = deployment.bodies(case.data.test, 2000, seed=4)
    pilot = loadgen.run(InProcess(deployment), bodies, Poisson(300.0, duration_s=0.3 if case.smoke else 1.0), seed=seed)
    rate = utilisation / float(np.nanmean(service_samples(pilot)))
    n = 800 if case.smoke else 8000
    result = loadgen.run(InProcess(deployment), bodies, Poisson(rate, duration_s=n / rate), seed=seed + 1)
    frame = result.requests[(result.requests["status"] == "ok") & (result.requests["batch_size"] > 0)]
    service_s = frame["service_ms"].to_numpy() / 1e3
    queue_s = lindley_waits(frame["scheduled_s"].to_numpy(), service_s)
    outside_s = np.clip(frame["latency_ms"].to_numpy() / 1e3 - service_s - queue_s, 0, None)
    simulated = capacity.simulate_latency(service_s, rate, 1, n=10_000 if case.smoke else 50_000, seed=seed)
    simulated = simulated + np.random.default_rng(seed).choice(outside_s, size=len(simulated))
    measured = result.summary["p99_ms"]
    sim_p99 = float(np.quantile(simulated, 0.99) * 1e3)
    return {"deployment": name, "rate_per_s": rate, "utilisation": rate * service_s.mean(),
            "measured_p99_ms": measured,
            "measured_p99_ci_ms": (result.summary["p99_ci_low_ms"], result.summary["p99_ci_high_ms"]),
            "simulated_p99_ms": sim_p99, "ratio": sim_p99 / measured, "within_20pct": abs(sim_p99 / measured - 1) <= .2,
            "outside_queue_p50_ms": float(np.median(outside_s) * 1e3), "requests": result.summary["requests"]}


@dataclass
class CampaignPlan:
    """The capacity plan for a campaign day, or why there is none (`reason`), with the operating
    point its service times come from and the simulator's p99 there next to the measured one."""

    day: capacity.DayResult | None
    point: OperatingPoint | None
    per_machine_per_s: float
    machines_at_peak: int | None
    simulated_p99_ms: float | None
    reason: str = ""

    def describe(self) -> str:
        if self.day is None:
            return f"capacity plan: not available ({self.reason})"
        p = self.point
        return (f"capacity plan: {self.machines_at_peak} machine(s) at the launch peak, each carrying "
                f"{p.rate_per_s:,.0f} bid requests/s ({TARGET_UTILISATION:.0%} of its {self.per_machine_per_s:,.0f}/s "
                f"at the SLA over HTTP). Measured there over HTTP: p99 {p.summary['p99_ms']:.2f} ms, "
                f"{p.cpu_per_request_ms:.3f} ms of CPU per request (the model calls {p.model_share:.0%} of it); "
                f"the simulator, from these service times, gives p99 {self.simulated_p99_ms:.2f} ms at that load.")


def plan_for(case: Case, goodputs: pd.DataFrame, traffic: DayTraffic, *, name: str = "optimized",
             price_per_hour_usd: float = PRICE_PER_HOUR_USD) -> CampaignPlan:
    """Size deployment `name` for `traffic` from its throughput at the SLA in `goodputs` (over HTTP
    where measured), measure its service times over HTTP at the per-machine rate of the spike,
    and simulate the day's plans from them."""
    rows = goodputs[goodputs["deployment"] == name]
    http_rows = rows[rows["transport"] == "http"] if "transport" in rows else rows
    row = (http_rows if len(http_rows) else rows).iloc[0]
    per_machine = float(row["throughput_at_sla_per_s"])
    if not per_machine > 0:
        note = str(row.get("note", "") or f"no rate met p99 <= {SLA_MS:g} ms")
        return CampaignPlan(None, None, per_machine, None, None, f"{name} met the SLA at no rate tried: {note}")
    peak = float(traffic.rates().max())
    machines = machines_for(peak, per_machine)
    try:
        point = operating_point(case, name, peak / machines)
    except RuntimeError as exc:
        return CampaignPlan(None, None, per_machine, machines, None, str(exc))
    cold_start_s = float(row["cold_start_s"]) if "cold_start_s" in row and row["cold_start_s"] > 0 else 5.0
    day = capacity_plan(point.samples_s, cold_start_s, traffic, smoke=case.smoke, capacity_per_s=per_machine,
                        price_per_hour_usd=price_per_hour_usd)
    utilisation = point.rate_per_s * float(np.mean(point.samples_s))
    simulated = float(np.interp(utilisation, day.table["utilisation"], day.table["p99_ms"]))
    return CampaignPlan(day, point, per_machine, machines, simulated)


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for a person: a missing or infinite figure reads "not available" (its row's `note`
    says why); never NaN or inf."""
    shown = frame.astype(object)
    infinite = shown.map(lambda v: isinstance(v, (float, np.floating)) and bool(np.isinf(v)))
    return shown.where(frame.notna() & ~infinite, "not available")
