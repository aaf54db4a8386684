"""The capacity plan of the real-time-bidding case: the service-time shape measured over HTTP at
the plan's own operating point (`operating_point`), the day simulated from it (`plan_for`), and
the simulator checked against measured runs (`OperatingPoint.check` at that point over HTTP,
`validate_simulator` in process). A case is anything with `deployments`, `data` and `smoke`
(`casestudy.Case`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from optlab.cases.rtb import service as http
from optlab.cases.rtb.campaign import (
    PRICE_PER_HOUR_USD,
    SLA_MS,
    TARGET_UTILISATION,
    DayTraffic,
    capacity_plan,
    machines_for,
)
from optlab.cases.rtb.deployments import Deployment, InProcess
from optlab.serving import capacity, external_load, loadgen
from optlab.serving.queueing import lindley_services, lindley_waits
from optlab.serving.schedules import Poisson

AGREEMENT = 0.25  # simulated and measured p99 at the plan's operating point within this share: they agree


def service_samples(result: loadgen.LoadResult) -> np.ndarray:
    """Per-request service seconds from a run: a call's time shared by the requests in it."""
    frame = result.requests
    served = frame[(frame["status"] == "ok") & (frame["batch_size"] > 0)]
    return (served["service_ms"] / served["batch_size"]).to_numpy() / 1e3


@dataclass
class OperatingPoint:
    """A deployment measured over HTTP, in its own process, at the rate one machine carries in the plan.

    What the client measured there is split in two (`http_service_times`): `floor_s`, the fastest
    answer's latency, a delay every request pays that no queue explains (the client's send, the
    sockets); and `samples_s`, the service-time shape the plan simulates: each answer's departure
    (less the floor) minus the later of its arrival and the previous departure
    (`queueing.lindley_services`), so the whole path counts (parsing, framework, codec, model,
    batching) as one FIFO server would have to serve it. A simulated latency is the floor plus
    the queue's response. `cpu_per_request_ms` and `model_share` say where the service process's
    CPU went; `summary`: the client's figures at that rate."""

    deployment: str
    rate_per_s: float
    samples_s: np.ndarray
    cpu_per_request_ms: float
    model_share: float  # the model calls' share of the process's CPU per request
    summary: dict[str, Any]
    model_samples_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the model calls alone, per request
    floor_s: float = 0.0

    def simulated_p99_ms(self, *, n: int = 20_000, seed: int = 0, samples_s: np.ndarray | None = None) -> float:
        """The simulator's p99 (one FIFO server, Poisson arrivals, service times drawn from
        `samples_s`, by default this point's) at this point's rate: what the plan believes about this
        machine at this load."""
        samples, floor = (self.samples_s, self.floor_s) if samples_s is None else (samples_s, 0.0)
        latency = capacity.simulate_latency(samples, self.rate_per_s, 1, n=n, seed=seed) + floor
        return float(np.quantile(latency, 0.99) * 1e3)

    def check(self, *, n: int = 20_000, seed: int = 0) -> dict[str, Any]:
        """The measured p99 and the simulated one at the same load, side by side."""
        measured, simulated = float(self.summary["p99_ms"]), self.simulated_p99_ms(n=n, seed=seed)
        return {"deployment": self.deployment, "rate_per_s": self.rate_per_s,
                "utilisation": self.rate_per_s * float(np.mean(self.samples_s)),
                "measured_p99_ms": measured, "simulated_p99_ms": simulated,
                "simulated_over_measured": simulated / measured if measured > 0 else float("nan")}

    def row(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "rate_per_s": self.rate_per_s,
                "cpu_per_request_ms": self.cpu_per_request_ms, "model_share": self.model_share,
                "measured_p99_ms": self.summary["p99_ms"], "requests": self.summary["requests"],
                "shed": self.summary["shed"]}


def http_service_times(result: loadgen.LoadResult) -> tuple[np.ndarray, float]:
    """Per-request service seconds of a run over HTTP as one FIFO server sees them, and the latency
    floor (`service_times` of the answered requests' scheduled sends and latencies)."""
    frame = result.requests[result.requests["status"] == "ok"]
    return service_times(frame["scheduled_s"].to_numpy(), frame["latency_ms"].to_numpy() / 1e3)


def service_times(arrivals_s: np.ndarray, latency_s: np.ndarray) -> tuple[np.ndarray, float]:
    """Answered requests' arrivals and latencies as one FIFO server's service seconds
    (`queueing.lindley_services` of arrivals and departures less the fastest answer's latency, the
    floor), floored at 1 us (a batch's later members cost ~nothing), and that floor."""
    arrivals, latency = np.asarray(arrivals_s, np.float64), np.asarray(latency_s, np.float64)
    if not len(latency):
        return np.zeros(0), 0.0
    order = np.argsort(arrivals, kind="stable")
    arrivals, latency = arrivals[order], latency[order]
    floor = float(latency.min())
    # (latency - floor) first: (arrival + latency) - floor rounds below the arrival for the fastest answers
    return np.maximum(lindley_services(arrivals, arrivals + (latency - floor)), 1e-6), floor


# Who drives the operating point: "hey" (compiled; paced per connection, so a closed loop: latency from
# the send) reaches the plan's per-machine rates, which optlab's Python client (open loop, latency from
# the schedule; a few thousand requests a second at most on a small machine) cannot.
CLIENTS = ("hey", "optlab")


def _client(client: str | None) -> str:
    if client is None:
        return "optlab" if external_load.missing_tools(("hey",)) else "hey"
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}; use one of {', '.join(CLIENTS)}")
    return client


def _drive_optlab(service, deployment, bodies, rate_per_s: float, n: int, connections: int, name: str):
    target = http.HttpTarget(service.port, http.ROUTES[deployment.config.payload], connections=connections,
                             content_type=deployment.payload.content_type)
    result = loadgen.run(target, bodies, Poisson(rate_per_s, duration_s=max(0.5, n / rate_per_s)),
                         label=f"{name} at {rate_per_s:,.0f}/s over HTTP (optlab's client, open loop)")
    return (*http_service_times(result), result.summary)


def _drive_hey(service, deployment, bodies, rate_per_s: float, n: int, connections: int, name: str):
    """hey paced at `rate_per_s` over enough connections that each waits >= 4 ms between sends (a slow
    answer then rarely delays the next), one hey process and one body (hey's offsets are per process:
    merging several would skew the arrivals by their start times), so the feature cache hits always.
    hey prints times in whole 0.1 ms steps: the service times derived here are that coarse (their mean
    holds; a ~0.2 ms call's shape does not), which the simulated-vs-measured check then shows."""
    connections = max(connections, min(64, math.ceil(rate_per_s * 0.004)))
    url = f"http://{http.HOST}:{service.port}{http.ROUTES[deployment.config.payload]}"
    load = external_load.ExternalLoad(url=url, body=bodies[0], tool="hey", connections=connections,
                                      duration_s=max(1, round(n / rate_per_s)), rate_per_s=rate_per_s,
                                      content_type=deployment.payload.content_type)
    result = external_load.external_load(load)
    ok = result.frame[result.frame["status_code"].between(200, 399)]
    samples, floor = service_times(ok["offset_s"].to_numpy(), ok["latency_ms"].to_numpy() / 1e3)
    summary = {**result.summary, "shed": result.summary["non_2xx"],
               "client": f"hey, {connections} connections paced at {rate_per_s:,.0f}/s, latency from the send"}
    return samples, floor, summary


def operating_point(case, name: str, rate_per_s: float, *, connections: int = 8,
                    requests: int | None = None, client: str | None = None) -> OperatingPoint:
    """Deployment `name` in its own service process at `rate_per_s` over HTTP: the service-time shape
    (`service_times`) and the CPU per request where the plan runs each machine. `client`: "hey"
    (the default where installed) or "optlab" (Poisson arrivals; at most a few thousand a second)."""
    client = _client(client)
    deployment = case.deployments[name]
    bodies = deployment.bodies(case.data.test, 2000, seed=5)
    n = requests or (700 if case.smoke else 5000)
    drive = _drive_hey if client == "hey" else _drive_optlab
    with http.start(spec=http.deployment_spec(deployment), mode="process", startup_s=120) as service:
        before = service.get("/stats")
        samples, floor_s, summary = drive(service, deployment, bodies, rate_per_s, n, connections, name)
        after = service.get("/stats")
    served = after["server"]["ok"] - before["server"]["ok"]
    model_s = np.asarray(after["service_ms"][-served:] if served else [], np.float64) / 1e3
    if served < 10 or len(samples) < 10 or not np.isfinite(samples).all():
        raise RuntimeError(f"{name} served {served} requests at {rate_per_s:,.0f}/s over HTTP: too few to describe "
                           "a replica; the machine may be too busy, re-run on a quieter one")
    cpu_per_request_s = (after["cpu_s"] - before["cpu_s"]) / served
    model_total_s = (after.get("service_ms_total", 0.0) - before.get("service_ms_total", 0.0)) / 1e3
    model_share = float(model_total_s / served / cpu_per_request_s) if cpu_per_request_s > 0 else 1.0
    return OperatingPoint(name, rate_per_s, samples, cpu_per_request_s * 1e3, min(model_share, 1.0), summary,
                          model_s, floor_s)


def validate_simulator(case, name: str, utilisation: float = 0.3, *, seed: int = 0) -> dict[str, Any]:
    """A measured run of one-at-a-time deployment `name` near `utilisation` against the request-level
    simulation (M/G/1) of the same rate with the run's own service times.

    The simulator models the queue; what the queue does not explain (the generator's send lag, the
    decoding and preprocessing before the server, a worker's wake-up) is measured in the same run:
    each request's latency minus its service minus its Lindley wait (its queueing wait replayed from
    the measured arrivals and service times), and added to the simulated responses by sampling.
    Near saturation the model breaks down in process: decoding and preprocessing run in the
    generator's receiving thread, a second stage sharing the interpreter lock with the worker,
    which the one-queue model leaves out."""
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
    sized_by_rule: int | None = None  # the one sizing rule's machines, where the operating point needed more

    def describe(self) -> str:
        if self.day is None:
            return f"capacity plan: not available ({self.reason})"
        p = self.point
        measured = float(p.summary["p99_ms"])
        share = p.rate_per_s / self.per_machine_per_s
        text = (f"capacity plan: {self.machines_at_peak} machine(s) at the launch peak, each carrying "
                f"{p.rate_per_s:,.0f} bid requests/s ({share:.0%} of its {self.per_machine_per_s:,.0f}/s "
                f"at the SLA over HTTP).")
        if self.sized_by_rule and self.machines_at_peak != self.sized_by_rule:
            text += (f" The sizing rule ({TARGET_UTILISATION:.0%} of that throughput) gave {self.sized_by_rule}, "
                     f"whose p99 at their own load was over {SLA_MS:g} ms: the plan adds machines (two at most) until "
                     "the measured p99 holds there.")
        client = p.summary.get("client", "optlab's client, open loop")
        text += (f" Measured there over HTTP ({client}): p99 {measured:.2f} ms"
                 + (f", over the {SLA_MS:g} ms SLA even so" if measured > SLA_MS else "") + ", "
                f"{p.cpu_per_request_ms:.3f} ms of the service's CPU per request (the model calls "
                f"{p.model_share:.0%} of it). The simulator, fed the service times measured there, gives "
                f"p99 {self.simulated_p99_ms:.2f} ms at that load")
        if not measured > 0:
            return text + " (the measured p99 is not available to compare with)."
        ratio = self.simulated_p99_ms / measured
        text += f" ({ratio:.2f}x the measured p99)."
        if abs(ratio - 1) > AGREEMENT:
            way, bound = ("pessimistic", "at most") if ratio > 1 else ("optimistic", "at least")
            text += (f" They differ by more than {AGREEMENT:.0%}: at this load the simulator is {way} (one queue "
                     "with independent service times; a batching service's time per request falls as its batches "
                     f"fill, a busy machine's stalls come in bursts), so the day's seconds over the SLA are {bound} "
                     "what this deployment would see; the measured p99 at the plan's own load is the one to trust.")
        return text


def plan_for(case, goodputs: pd.DataFrame, traffic: DayTraffic, *, name: str = "optimized",
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
    sized = machines = machines_for(peak, per_machine)
    try:
        point = operating_point(case, name, peak / machines)
        # the rule sizes from a throughput measured elsewhere (wrk's closed loop): where the machine misses
        # the SLA at its own operating point, the plan adds machines until it holds there (at most two)
        while float(point.summary["p99_ms"]) > SLA_MS and machines < sized + 2:
            machines += 1
            point = operating_point(case, name, peak / machines)
    except RuntimeError as exc:
        return CampaignPlan(None, None, per_machine, machines, None, str(exc))
    cold_start_s = float(row["cold_start_s"]) if "cold_start_s" in row and row["cold_start_s"] > 0 else 5.0
    utilisation = point.rate_per_s * float(np.mean(point.samples_s))
    day = capacity_plan(point.samples_s, cold_start_s, traffic, smoke=case.smoke, capacity_per_s=per_machine,
                        price_per_hour_usd=price_per_hour_usd, operating_utilisation=utilisation,
                        latency_floor_s=point.floor_s, machines_at_peak=machines)
    # the day's own table holds this exact load: the p99 the plan uses there, not an interpolation
    simulated = float(np.interp(utilisation, day.table["utilisation"], day.table["p99_ms"]))
    return CampaignPlan(day, point, per_machine, machines, simulated, sized_by_rule=sized)
