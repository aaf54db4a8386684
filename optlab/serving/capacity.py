"""Capacity and cost planning beyond one machine, by discrete-event simulation (simpy).

Two levels, both simpy processes (no hand-written event loop):

* **Request level** (`simulate_waits`, `latency_table`): every request is an event; `c` servers
  take requests FIFO from one queue and hold each for a service time drawn from the *measured*
  service-time samples (empirical distribution). Validated against Erlang C (`erlang_c_wait`) for
  M/M/c and against a real measured run at one operating point.
* **Fleet level** (`simulate_day`): a day of traffic at **per-second granularity**: each second
  brings a Poisson count of requests (any `Traffic`: a case gives its own day's curve);
  replicas start (paying a cold start before they serve), serve and stop under a scaling policy
  (`Fixed`, `Reactive` thresholds + cooldown, `ScaleToZero`); a backlog carries from second to
  second and what cannot be answered within the deadline is shed and counted. A second's p99 is
  the backlog's wait plus the request-level p99 at that second's utilisation per replica (from
  `latency_table`), so a simulated day of ~10^8 requests runs in seconds.

What it leaves out: load-balancer imbalance between replicas (requests are spread evenly),
queueing within a second beyond the stationary table (a second starting with a backlog is
modelled as a fluid), noisy neighbours and machine failures, batching's dependence of the
service time on the load (a batching replica is given its per-request cost at the measured load),
and network time between the clients and the service. Prices are per replica-hour, billed from
the moment a replica starts (cold start included) until it stops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd
import simpy

SECONDS_PER_DAY = 86_400
HOURS_PER_MONTH = 730.0  # 365 * 24 / 12: the month every cost in optlab is quoted for
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
# the one sizing rule: a replica carries at most 70% of its capacity (headroom for a stall or a burst)
TARGET_UTILISATION = 0.7


# ---- request level -------------------------------------------------------------------------
def erlang_c_wait(rate: float, mean_service: float, servers: int) -> float:
    """Mean wait in queue of an M/M/c queue (Erlang C), in the unit of `mean_service`."""
    a = rate * mean_service  # offered load in erlangs
    rho = a / servers
    if not 0 <= rho < 1:
        raise ValueError(f"utilisation {rho:.3g} must be < 1 for a finite wait (rate x service / servers)")
    terms = [a ** k / math.factorial(k) for k in range(servers)]
    top = a ** servers / math.factorial(servers) / (1 - rho)
    p_wait = top / (sum(terms) + top)
    return p_wait * mean_service / (servers - a)


def simulate_waits(gaps: np.ndarray, service: np.ndarray, servers: int) -> np.ndarray:
    """Queue waits of FIFO requests arriving after `gaps` (inter-arrival times) and each holding one
    of `servers` servers for its `service` time; simpy processes, one per server plus the source."""
    gaps, service = np.asarray(gaps, np.float64), np.asarray(service, np.float64)
    if gaps.shape != service.shape:
        raise ValueError(f"one service time per arrival: got {gaps.shape} and {service.shape}")
    if int(servers) != servers or servers < 1:
        raise ValueError(f"servers must be an integer >= 1, got {servers!r}")
    env = simpy.Environment()
    queue = simpy.Store(env)
    waits = np.zeros(len(gaps))
    arrived = np.zeros(len(gaps))

    def source():
        for i, gap in enumerate(gaps.tolist()):
            yield env.timeout(gap)
            arrived[i] = env.now
            queue.put(i)

    def server():
        while True:
            i = yield queue.get()
            waits[i] = env.now - arrived[i]
            yield env.timeout(service[i])

    env.process(source())
    for _ in range(servers):
        env.process(server())
    env.run()
    return waits


def sample_service(samples_s: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` service times drawn (with replacement) from measured samples in seconds."""
    samples_s = np.asarray(samples_s, np.float64)
    samples_s = samples_s[np.isfinite(samples_s) & (samples_s > 0)]
    if samples_s.size == 0:
        raise ValueError("no positive service-time samples: measure the deployment first (LoadResult.requests)")
    return rng.choice(samples_s, size=n, replace=True)


def simulate_latency(service_samples_s: np.ndarray, rate_per_s: float, servers: int = 1, *, n: int = 20_000,
                     seed: int = 0, warmup: float = 0.1) -> np.ndarray:
    """Response times (wait + service, seconds) of `n` Poisson requests at `rate_per_s` served by
    `servers` servers with the measured service-time distribution; the first `warmup` share dropped."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_per_s, n)
    service = sample_service(service_samples_s, n, rng)
    waits = simulate_waits(gaps, service, servers)
    keep = slice(int(n * warmup), None)
    return (waits + service)[keep]


def latency_table(service_samples_s: np.ndarray, servers: int = 1, *, utilisations=None, n: int = 20_000,
                  seed: int = 0) -> pd.DataFrame:
    """p50/p99 response time (ms) against utilisation per replica, from request-level simulation."""
    samples = np.asarray(service_samples_s, np.float64)
    mean = float(np.mean(samples[np.isfinite(samples) & (samples > 0)]))
    utilisations = np.asarray(utilisations if utilisations is not None else
                              (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95), np.float64)
    rows = []
    for k, rho in enumerate(utilisations):
        rate = max(rho, 1e-3) * servers / mean
        latency = simulate_latency(samples, rate, servers, n=n, seed=seed + k)
        rows.append({"utilisation": float(rho), "p50_ms": float(np.quantile(latency, 0.5) * 1e3),
                     "p99_ms": float(np.quantile(latency, 0.99) * 1e3)})
    return pd.DataFrame(rows)


# ---- traffic -------------------------------------------------------------------------------
class Traffic(Protocol):
    """What a simulated day needs from its traffic: `seconds` in the (possibly compressed) day, the
    mean rate of each second (`rates()`) and Poisson arrivals around it (`counts(seed)`)."""

    seconds: int

    def rates(self) -> np.ndarray: ...

    def counts(self, seed: int = 0) -> np.ndarray: ...


# ---- scaling policies ----------------------------------------------------------------------
@dataclass(frozen=True)
class Fixed:
    """Always `replicas` replicas (provisioned for the peak)."""

    replicas: int = 4
    kind: ClassVar[str] = "fixed"

    @property
    def name(self) -> str:
        return f"fixed({self.replicas})"

    @property
    def start_replicas(self) -> int:
        return self.replicas

    def target(self, current: int, demand_per_s: float, capacity_per_s: float, idle_s: float) -> int:
        return self.replicas


@dataclass(frozen=True)
class Reactive:
    """Autoscaling on utilisation, checked every `interval_s`: above `scale_up_at` add replicas
    (enough to bring utilisation back to the middle of the band), below `scale_down_at` remove one;
    no change within `cooldown_s` of the last one. New replicas serve after the cold start."""

    min_replicas: int = 1
    max_replicas: int = 16
    scale_up_at: float = 0.7
    scale_down_at: float = 0.3
    interval_s: float = 15.0
    cooldown_s: float = 120.0
    kind: ClassVar[str] = "reactive"

    def __post_init__(self):
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, max >= 1; got {self.min_replicas}, "
                             f"{self.max_replicas}")
        if not 0 < self.scale_down_at < self.scale_up_at <= 1:
            raise ValueError(f"need 0 < scale_down_at < scale_up_at <= 1, got {self.scale_down_at}, "
                             f"{self.scale_up_at}")

    @property
    def name(self) -> str:
        return (f"reactive({self.min_replicas}-{self.max_replicas}, up>{self.scale_up_at:g}, "
                f"down<{self.scale_down_at:g}, cooldown {self.cooldown_s:g}s)")

    @property
    def start_replicas(self) -> int:
        return max(self.min_replicas, 1)

    def target(self, current: int, demand_per_s: float, capacity_per_s: float, idle_s: float) -> int:
        """Replicas wanted, from the last second's demand (arrivals + backlog) against the capacity
        of the replicas running or starting (`capacity_per_s` each)."""
        middle = (self.scale_up_at + self.scale_down_at) / 2
        if current == 0:
            wanted = math.ceil(demand_per_s / (capacity_per_s * middle)) if demand_per_s > 0 else 0
        else:
            utilisation = demand_per_s / (current * capacity_per_s)
            if utilisation > self.scale_up_at:
                wanted = max(current + 1, math.ceil(demand_per_s / (capacity_per_s * middle)))
            elif utilisation < self.scale_down_at:
                wanted = current - 1
            else:
                wanted = current
        return int(min(self.max_replicas, max(self.min_replicas, wanted)))


@dataclass(frozen=True)
class ScaleToZero(Reactive):
    """Reactive scaling that goes down to no replica after `idle_after_s` without traffic; the
    first request afterwards waits a cold start (and is shed if that breaks its deadline)."""

    min_replicas: int = 0
    idle_after_s: float = 300.0
    kind: ClassVar[str] = "scale_to_zero"

    @property
    def name(self) -> str:
        return f"scale-to-zero(max {self.max_replicas}, idle {self.idle_after_s:g}s, cooldown {self.cooldown_s:g}s)"

    @property
    def start_replicas(self) -> int:
        return 0

    def target(self, current: int, demand_per_s: float, capacity_per_s: float, idle_s: float) -> int:
        if idle_s >= self.idle_after_s:
            return 0
        wanted = super().target(current, demand_per_s, capacity_per_s, idle_s)
        return max(wanted, 1) if demand_per_s > 0 else wanted


Scaling = Fixed | Reactive | ScaleToZero
SCALINGS: dict[str, type] = {cls.kind: cls for cls in (Fixed, Reactive, ScaleToZero)}


# ---- fleet level ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Replica:
    """What one replica is, from measurement: service-time samples (s) per request, the servers
    (workers) in it, its cold start (s) and its price per hour (USD)."""

    service_samples_s: tuple[float, ...]
    servers: int = 1
    cold_start_s: float = 5.0
    price_per_hour_usd: float = 0.10

    @classmethod
    def measured(cls, service_samples_s, **kwargs) -> "Replica":
        samples = np.asarray(service_samples_s, np.float64)
        samples = samples[np.isfinite(samples) & (samples > 0)]
        if samples.size < 10:
            raise ValueError(f"need >= 10 positive service-time samples to describe a replica, got {samples.size}")
        return cls(tuple(float(s) for s in samples), **kwargs)

    @property
    def mean_service_s(self) -> float:
        return float(np.mean(self.service_samples_s))

    @property
    def capacity_per_s(self) -> float:
        """Requests per second one replica completes when always busy."""
        return self.servers / self.mean_service_s


@dataclass
class DayResult:
    """Per-second series and one summary row per scaling policy."""

    series: pd.DataFrame  # time_s, policy, arrivals, served, shed, replicas, ready, utilisation, p99_ms
    summary: pd.DataFrame
    table: pd.DataFrame  # the request-level latency table used


def simulate_day(replica: Replica, traffic: Traffic, policies, *, deadline_ms: float = 10.0, seed: int = 0,
                 table: pd.DataFrame | None = None, table_n: int = 20_000) -> DayResult:
    """One simulated day per scaling policy (same arrivals for each): per second, the replicas
    ready, utilisation, shed requests and p99; cost per month at the replica's price."""
    if table is None:
        table = latency_table(np.asarray(replica.service_samples_s), replica.servers, n=table_n, seed=seed)
    counts = traffic.counts(seed)
    frames, rows = [], []
    for policy in policies:
        if type(policy) not in SCALINGS.values():
            raise TypeError(f"unknown scaling policy {policy!r}; use one of {', '.join(SCALINGS)}")
        series = _fleet(replica, counts, policy, deadline_ms, table)
        frames.append(series.assign(policy=policy.name))
        rows.append(_summary(series, policy, replica, traffic, deadline_ms))
    return DayResult(pd.concat(frames, ignore_index=True), pd.DataFrame(rows), table)


def _fleet(replica: Replica, counts: np.ndarray, policy, deadline_ms: float, table: pd.DataFrame) -> pd.DataFrame:
    n = len(counts)
    env = simpy.Environment()
    capacity = replica.capacity_per_s
    deadline_s = deadline_ms / 1e3
    state = {"ready": 0, "starting": 0, "backlog": 0.0, "idle_s": 0.0, "utilisation": 0.0, "demand": 0.0,
             "last_change": -1e18}
    out = {k: np.zeros(n) for k in ("served", "shed", "replicas", "ready", "utilisation", "p99_ms", "backlog")}
    util_grid, p99_grid = table["utilisation"].to_numpy(), table["p99_ms"].to_numpy()
    cold_p99 = float(np.interp(0.0, util_grid, p99_grid))

    def start_replica():
        state["starting"] += 1
        yield env.timeout(replica.cold_start_s)
        state["starting"] -= 1
        state["ready"] += 1

    def scale_to(wanted: int):
        current = state["ready"] + state["starting"]
        for _ in range(max(0, wanted - current)):
            env.process(start_replica())
        drop = max(0, current - wanted)
        state["ready"] -= min(drop, state["ready"])  # stop ready ones; starting ones finish their start

    def traffic():
        for t in range(n):
            arrivals = float(counts[t])
            ready = state["ready"]
            can_serve = ready * capacity
            work = state["backlog"] + arrivals
            served = min(work, can_serve)
            backlog = work - served
            limit = can_serve * deadline_s  # what can still be answered within the deadline next second
            shed = max(0.0, backlog - limit)
            backlog -= shed
            rho = served / can_serve if can_serve else (1.0 if work else 0.0)
            if ready:
                p99 = float(np.interp(min(rho, util_grid[-1]), util_grid, p99_grid)) + 1e3 * backlog / can_serve
            else:
                p99 = float("nan") if not arrivals else float("inf")
            state.update(backlog=backlog, utilisation=rho, demand=work)
            state["idle_s"] = state["idle_s"] + 1 if arrivals == 0 else 0.0
            for key, value in (("served", served), ("shed", shed), ("replicas", ready + state["starting"]),
                               ("ready", ready), ("utilisation", rho), ("p99_ms", p99), ("backlog", backlog)):
                out[key][t] = value
            yield env.timeout(1.0)

    def autoscaler():
        interval = getattr(policy, "interval_s", 1.0)
        while True:
            current = state["ready"] + state["starting"]
            wanted = policy.target(current, state["demand"], capacity, state["idle_s"])
            cooled = env.now - state["last_change"] >= getattr(policy, "cooldown_s", 0.0)
            urgent = current == 0 and wanted > 0
            if wanted != current and (cooled or urgent):
                scale_to(wanted)
                state["last_change"] = env.now
            yield env.timeout(interval)

    for _ in range(policy.start_replicas):  # provisioned before the day starts: no cold start
        state["ready"] += 1
    env.process(traffic())
    env.process(autoscaler())
    env.run(until=n)
    frame = pd.DataFrame({"time_s": np.arange(n), "arrivals": counts, **out})
    frame.loc[frame["ready"].eq(0) & frame["arrivals"].gt(0), "p99_ms"] = np.inf
    frame.attrs["cold_p99_ms"] = cold_p99
    return frame


def _summary(series: pd.DataFrame, policy, replica: Replica, traffic: Traffic, deadline_ms: float) -> dict:
    scale = SECONDS_PER_DAY / traffic.seconds  # a compressed (smoke) day is billed as a whole day
    replica_hours = float(series["replicas"].sum()) * scale / 3600.0
    per_day = replica_hours * replica.price_per_hour_usd
    arrivals, shed = float(series["arrivals"].sum()), float(series["shed"].sum())
    busy = series["arrivals"] > 0
    over = busy & (series["p99_ms"] > deadline_ms)
    no_replica = busy & ~np.isfinite(series["p99_ms"])
    served_s = busy & ~no_replica
    served = float(series["served"].sum())
    return {
        "policy": policy.name, "kind": policy.kind, "seconds": traffic.seconds, "arrivals": int(arrivals),
        "served": int(round(served)), "shed": int(round(shed)), "shed_rate": shed / max(arrivals, 1.0),
        "seconds_over_sla": int(over.sum()),
        "requests_in_seconds_over_sla": float(series.loc[over, "arrivals"].sum() / max(arrivals, 1.0)),
        # a second with arrivals and no replica ready has no p99 (inf in the series): counted on its own
        "seconds_without_replica": int(no_replica.sum()),
        "worst_p99_ms": float(series.loc[served_s, "p99_ms"].max()) if served_s.any() else float("nan"),
        "median_p99_ms": float(series.loc[served_s, "p99_ms"].median()) if served_s.any() else float("nan"),
        "max_replicas": int(series["replicas"].max()), "mean_replicas": float(series["replicas"].mean()),
        "replica_hours_per_day": replica_hours, "price_per_hour_usd": replica.price_per_hour_usd,
        "cost_per_day_usd": per_day, "cost_per_month_usd": per_day * DAYS_PER_MONTH,
        "cost_per_million_usd": per_day / max(served * scale, 1.0) * 1e6,
    }


def per_minute(series: pd.DataFrame) -> pd.DataFrame:
    """The per-second series folded to minutes for charts: worst p99, mean replicas, shed and arrivals."""
    minute = series["time_s"] // 60
    grouped = series.assign(minute=minute).replace([np.inf], np.nan).groupby(["policy", "minute"])
    return grouped.agg(arrivals=("arrivals", "sum"), shed=("shed", "sum"), replicas=("replicas", "mean"),
                       p99_ms=("p99_ms", "max")).reset_index()


def replicas_for(rate_per_s: float, replica: Replica, target_utilisation: float = TARGET_UTILISATION) -> int:
    """Replicas to serve `rate_per_s` at or below `target_utilisation` each (the fixed plan's size)."""
    return max(1, math.ceil(rate_per_s / (replica.capacity_per_s * target_utilisation)))

