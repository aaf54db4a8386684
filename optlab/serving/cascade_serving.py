"""A cascade served three ways, under the open-loop load generator and the throughput-at-SLA search of
every serving figure, with the same core budget:

- expensive alone (`EXPENSIVE_ALONE`): one `Server` of the expensive model, the whole budget as workers;
- the cascade in one server (`ONE_SERVER`): one `Server` whose model is the cascade's `Router`: a batch
  with an unsure row waits for the expensive call before any of its requests is answered;
- two-stage (`TWO_STAGE`): `serving.two_stage.TwoStage`, the budget split explicitly (`Split`) between a
  cheap stage and an expensive stage, unsure requests forwarded.

    split = Split.even(cores=2)                                    # 1 + 1 workers x 1 thread
    runs = goodput_rounds(cascade, payloads, split, SlaSearch(max_p99_ms=10), rounds=3)   # one row per round
    table = at_rate(cascade, payloads, split, rate_per_s=300)     # one fixed-rate run each (quick)

`cascade` is a cascade candidate (`optlab.techniques.apply(Cascade(...), ...)`): its `parts` (cheap,
expensive) and its `predict_fn` (the `Router`, whose threshold and confidence the two-stage server uses).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from optlab.serving import loadgen
from optlab.serving.policies import DynamicBatching, Policy
from optlab.serving.schedules import Poisson
from optlab.serving.server import Server, available_cores
from optlab.serving.sla import SlaSearch, server_probe, throughput_at_sla
from optlab.serving.two_stage import CHEAP, EXPENSIVE, Stage, TwoStage

EXPENSIVE_ALONE, ONE_SERVER, TWO_STAGE = "expensive alone", "cascade, one server", "two-stage"
POLICY = DynamicBatching(max_batch=16, max_wait_ms=1.0)


@dataclass(frozen=True)
class Split:
    """The core budget and how the two-stage deployment splits it (workers x 1 thread per stage)."""

    cores: int
    cheap_workers: int
    expensive_workers: int

    def __post_init__(self):
        if self.cheap_workers < 1 or self.expensive_workers < 1 or \
                self.cheap_workers + self.expensive_workers > self.cores:
            raise ValueError(f"Split needs >= 1 worker per stage within {self.cores} cores, got "
                             f"{self.cheap_workers} + {self.expensive_workers}; e.g. Split.even(cores=2)")

    @classmethod
    def even(cls, cores: int | None = None) -> "Split":
        cores = int(cores or available_cores())
        if cores < 2:
            raise ValueError(f"two-stage serving needs >= 2 cores (one per stage), this process may use {cores}")
        return cls(cores, math.ceil(cores / 2), cores - math.ceil(cores / 2))

    @property
    def text(self) -> str:
        return f"{self.cheap_workers}+{self.expensive_workers} of {self.cores} cores"


def deployments(candidate: Any, split: Split, policy: Policy = POLICY) -> dict[str, Callable[[], Any]]:
    """A factory of a fresh server per deployment (each probe starts one anew)."""
    cheap, expensive = candidate.parts
    router = candidate.predict_fn
    return {
        EXPENSIVE_ALONE: lambda: Server(expensive, policy, workers=split.cores, cores=split.cores),
        ONE_SERVER: lambda: Server(candidate, policy, workers=split.cores, cores=split.cores),
        TWO_STAGE: lambda: TwoStage(cheap, expensive, threshold=router.threshold, confidence=router.confidence,
                                    decision=router.decision, cheap_stage=Stage(policy, split.cheap_workers),
                                    expensive_stage=Stage(policy, split.expensive_workers), cores=split.cores),
    }


def goodput_rounds(candidate: Any, payloads: Sequence[dict], split: Split, search: SlaSearch, *, rounds: int = 3,
                   headroom_per_s: float | None = None, policy: Policy = POLICY) -> pd.DataFrame:
    """Throughput at the SLA of each deployment in interleaved rounds (a stall of a shared machine hits
    one round of all three, not one deployment); the two-stage rows carry the share of rows sent on in
    the probe at the SLA (`sent_on_share_at_sla`, from its own accounting)."""
    rows = []
    for r in range(rounds):
        for name, make in deployments(candidate, split, policy).items():
            made: list[Any] = []
            probes: list[tuple[float, dict]] = []  # (rate, the server's accounting), in probe order

            def fresh(make=make, made=made):
                made.append(make())
                return made[-1]
            probe = server_probe(fresh, payloads, search, headroom_per_s=headroom_per_s)

            def logged(rate, probe=probe, made=made, probes=probes):
                summary = probe(rate)
                probes.append((rate, made[-1].stats()))
                return summary
            result = throughput_at_sla(logged, search)
            row = {"deployment": name, "round": r, **result.row()}
            if name == TWO_STAGE:  # the last probe at the reported rate is the one that passed
                at = [stats for rate, stats in probes if rate == result.throughput_per_s]
                row["sent_on_share_at_sla"] = at[-1]["escalated_share"] if at else None
            rows.append(row)
    return pd.DataFrame(rows)


def at_rate(candidate: Any, payloads: Sequence[dict], split: Split, rate_per_s: float, *, duration_s: float = 1.0,
            seed: int = 0, policy: Policy = POLICY) -> pd.DataFrame:
    """One open-loop run per deployment at `rate_per_s`: p50/p99 of every request, and p99 of the requests
    the cheap model is sure of (`p99_sure_ms`: two-stage answers them at the cheap stage; in one server
    they may share a batch with an unsure one) and of the others (`p99_unsure_ms`); for the two-stage
    server, how many each stage answered and the share of rows sent on."""
    cheap, router = candidate.parts[0], candidate.predict_fn
    sure = np.array([not router.escalated(np.asarray(cheap.predict(p))).any() for p in payloads])
    rows = []
    for name, make in deployments(candidate, split, policy).items():
        server = make()
        result = loadgen.run(server, payloads, Poisson(rate_per_s, duration_s=duration_s), seed=seed)
        s, frame = result.summary, result.requests
        ok = frame["status"].eq("ok")
        is_sure = sure[frame["request_id"].to_numpy() % len(payloads)]
        row = {"deployment": name, "offered_per_s": rate_per_s, "requests": s["requests"], "ok": s["ok"],
               "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
               "p99_sure_ms": _p99(frame.loc[ok & is_sure, "latency_ms"]),
               "p99_unsure_ms": _p99(frame.loc[ok & ~is_sure, "latency_ms"]), "stopped_early": s["stopped_early"]}
        if name == TWO_STAGE:
            stats = server.stats()
            row["sent_on_share"] = stats["escalated_share"]
            for stage in (CHEAP, EXPENSIVE):
                row[f"{stage}_answered"] = int(stats[f"answered_by_{stage}"])
        rows.append(row)
    return pd.DataFrame(rows)


def _p99(latency: pd.Series) -> float | None:
    return float(latency.quantile(0.99)) if len(latency) else None
