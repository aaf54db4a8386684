"""Throughput at the SLA (goodput) and a configuration search, as Triton's Model Analyzer does.

`throughput_at_sla` finds the highest offered load whose p99 stays within the limit: it brackets
(doubling or halving the rate until one probe passes and one fails), then bisects between them
in log space. With `budget_s` the search starts no probe that cannot end within its time budget (a
probe lasts at least `min_requests / rate` seconds) and says what it has found when the budget is
spent: a bracket (the highest rate that passed, `upper_per_s` the lowest that failed above it) or,
when nothing has passed yet, only an upper bound (`bound == "upper"`: goodput < `upper_per_s`), never
a zero that was not measured. A failing rate is probed again `confirm_failures` times and fails only if every
probe fails (a single stall of a shared machine can push one probe's p99 over; every probe is
kept in the curve, so this is visible). Each probe is an open-loop Poisson run long enough for a
valid p99 (>= 662 requests, MLPerf LoadGen's own minimum) that must also not stop early or fail
more than `max_failed_rate` of its requests. Every probe is kept, so the measured latency-vs-load curve can be drawn.
`search_configs` does this for each policy x workers x threads and ranks them.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from optlab.serving import loadgen
from optlab.serving.policies import Admission, NoBatching, Policy, parse_policy
from optlab.serving.schedules import Poisson
from optlab.serving.server import Server

MIN_P99_REQUESTS = 662


@dataclass(frozen=True)
class SlaSearch:
    """How to search: the limit, the probes' length and the precision asked for."""

    max_p99_ms: float = 10.0
    min_requests: int = MIN_P99_REQUESTS
    probe_s: float = 1.0
    max_failed_rate: float = 0.01
    rel_tol: float = 0.05
    start_per_s: float = 100.0
    min_per_s: float = 1.0
    max_per_s: float = 100_000.0
    max_probes: int = 20
    confirm_failures: int = 1  # re-probes of a failing rate: a shared machine stalls at random
    budget_s: float | None = None  # no probe starts that cannot end within this many seconds of the search

    def __post_init__(self):
        check_budget(self.budget_s)
        if not self.max_p99_ms > 0:
            raise ValueError(f"max_p99_ms must be > 0, got {self.max_p99_ms!r}")
        if self.min_requests < MIN_P99_REQUESTS:
            raise ValueError(f"min_requests must be >= {MIN_P99_REQUESTS} for a valid p99 (LoadGen's minimum), "
                             f"got {self.min_requests}")
        if not 0 < self.rel_tol < 1:
            raise ValueError(f"rel_tol must be in (0, 1), got {self.rel_tol!r}")


def check_budget(budget_s: float | None) -> None:
    """A search's time budget is a positive number of seconds, or None for none."""
    if budget_s is not None and not (budget_s > 0 and math.isfinite(budget_s)):
        raise ValueError(f"budget_s must be a positive number of seconds or None, got {budget_s!r}")


@dataclass
class SlaResult:
    """The highest passing offered load (0 when none passed) and every probe. `upper_per_s` is the lowest
    failing load above it (None when no probe failed there); `bound` says what the figure is: "" a figure
    (the search narrowed it to `rel_tol`, or nothing passed down to `min_per_s`), "lower" (still passing at
    the highest load probed), "bracket" (the probes or the time budget ran out between the two), "upper"
    (the time budget ran out before any load passed: only `upper_per_s` is known)."""

    throughput_per_s: float
    p99_ms: float  # at that load
    curve: pd.DataFrame
    search: SlaSearch
    notes: list[str] = field(default_factory=list)
    upper_per_s: float | None = None
    bound: str = ""
    seconds: float | None = None

    @property
    def met(self) -> bool:
        return self.throughput_per_s > 0

    def row(self) -> dict[str, Any]:
        return {"throughput_at_sla_per_s": self.throughput_per_s, "p99_at_sla_load_ms": self.p99_ms,
                "max_p99_ms": self.search.max_p99_ms, "sla_met": self.met, "probes": len(self.curve),
                "note": "; ".join(self.notes)}


Probe = Callable[[float], dict[str, Any]]


def passes(summary: dict[str, Any], search: SlaSearch) -> bool:
    return bool(summary["p99_ms"] <= search.max_p99_ms and not summary["stopped_early"]
                and summary["failed_rate"] <= search.max_failed_rate and summary["requests"] >= search.min_requests)


def throughput_at_sla(probe: Probe, search: SlaSearch = SlaSearch()) -> SlaResult:
    """Bracket, then bisect, the offered load with `probe(rate) -> summary row` (see `server_probe`)."""
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    spent = False  # the time budget stopped the search

    def affordable(rate: float) -> bool:
        """Within the budget: the first probe always runs; a later one only if it can end in time."""
        nonlocal spent
        if search.budget_s is None or not rows:
            return True
        floor_s = max(search.probe_s, search.min_requests / rate)
        spent = spent or time.monotonic() - started + floor_s > search.budget_s
        return not spent

    def measure(rate: float) -> bool:
        for i in range(1 + search.confirm_failures):
            if i and not affordable(rate):  # an unconfirmed failure still fails: the rate is not passed
                return False
            summary = dict(probe(rate))
            ok = passes(summary, search)
            rows.append({**summary, "offered_per_s": rate, "passed": ok})
            if ok:
                return True
        return False

    low = high = None
    rate = search.start_per_s
    if measure(rate):
        low = rate
        while high is None and len(rows) < search.max_probes and rate < search.max_per_s:
            rate = min(rate * 2, search.max_per_s)
            if not affordable(rate):
                break
            if measure(rate):
                low = rate
            else:
                high = rate
    else:
        high = rate
        while low is None and len(rows) < search.max_probes and rate > search.min_per_s:
            rate = max(rate / 2, search.min_per_s)
            if not affordable(rate):
                break
            if measure(rate):
                low = rate
            else:
                high = rate
    notes = []
    while low is not None and high is not None and high / low - 1 > search.rel_tol and len(rows) < search.max_probes:
        middle = math.sqrt(low * high)
        if not affordable(middle):
            break
        if measure(middle):
            low = middle
        else:
            high = middle
    curve = pd.DataFrame(rows).sort_values("offered_per_s", kind="stable").reset_index(drop=True)
    seconds = time.monotonic() - started
    budget = f"the time budget ({search.budget_s:g} s)" if spent else f"{len(rows)} probes"
    if low is None:
        closest = curve.loc[curve["p99_ms"].idxmin()] if curve["p99_ms"].notna().any() else curve.iloc[0]
        if spent:
            notes.append(f"an upper bound: {budget} ran out before any load met p99 <= {search.max_p99_ms:g} ms; "
                         f"the lowest tried ({high:.4g}/s) failed, so the throughput at the SLA is below it")
            return SlaResult(0.0, float(closest["p99_ms"]), curve, search, notes, high, "upper", seconds)
        notes.append(no_rate_note(curve, search))
        return SlaResult(0.0, float(closest["p99_ms"]), curve, search, notes, high, "", seconds)
    bound = ""
    if high is None:
        notes.append(f"still within the SLA at the highest load probed ({low:.4g}/s): a lower bound")
        bound = "lower"
    elif high / low - 1 > search.rel_tol:
        notes.append(f"stopped after {budget} between {low:.4g}/s and {high:.4g}/s: a bracket")
        bound = "bracket"
    best = curve[(curve["offered_per_s"] == low) & curve["passed"]].iloc[-1]
    return SlaResult(float(low), float(best["p99_ms"]), curve, search, notes, high, bound, seconds)


def why_failed(probe: dict[str, Any], search: SlaSearch) -> str:
    """Why one probe failed the SLA, in words (its p99 first: the usual reason)."""
    p99 = probe.get("p99_ms")
    if p99 is None or not math.isfinite(p99):
        return "no request was answered"
    if p99 > search.max_p99_ms:
        return f"p99 {p99:,.0f} ms" if p99 >= 100 else f"p99 {p99:.3g} ms"
    if probe.get("stopped_early"):
        return f"p99 {p99:.3g} ms but the run stopped early (the queue kept growing)"
    if probe.get("failed_rate", 0) > search.max_failed_rate:
        return f"p99 {p99:.3g} ms but {probe['failed_rate']:.1%} of requests failed or were shed"
    return f"p99 {p99:.3g} ms but only {probe.get('requests', 0)} requests (a valid p99 needs {search.min_requests})"


def no_rate_note(curve: pd.DataFrame, search: SlaSearch) -> str:
    """Why no rate met the SLA: what the lowest rate tried did, and what that means."""
    lowest = curve.sort_values("offered_per_s", kind="stable").iloc[0]
    return (f"nothing meets p99 <= {search.max_p99_ms:g} ms: at the lowest rate tried "
            f"({lowest['offered_per_s']:,.4g}/s) {why_failed(dict(lowest), search)}: the machine is busy or the "
            "SLA too tight; re-run on a quieter machine, raise the limit or choose a faster candidate or policy")


def server_probe(make_server: Callable[[], Server], requests: Sequence[dict], search: SlaSearch, *,
                 seed: int = 0, headroom_per_s: float | None = None, keys=None) -> Probe:
    """A probe that offers Poisson load to a fresh server from `make_server()` for at least
    `search.min_requests` requests (and `search.probe_s` seconds)."""
    def probe(rate: float) -> dict[str, Any]:
        expected = 1.2 * search.min_requests + 4 * math.sqrt(search.min_requests)
        load = Poisson(rate, duration_s=max(search.probe_s, expected / rate))
        return loadgen.run(make_server(), requests, load, seed=seed, headroom_per_s=headroom_per_s,
                           keys=keys, saturation_s=0.5).summary
    return probe


def search_configs(model: Any, requests: Sequence[dict], *, policies: Sequence[Policy] = (NoBatching(),),
                   workers: Sequence[int] = (1,), threads_per_worker: Sequence[int] = (1,),
                   search: SlaSearch = SlaSearch(), admission: Admission | None = None, seed: int = 0,
                   headroom_per_s: float | None = None) -> pd.DataFrame:
    """Throughput at the SLA for every policy x workers x threads that fits the cores, best first
    (configurations that would oversubscribe the cores are listed with the reason, not run)."""
    rows = []
    for policy, n_workers, threads in itertools.product(policies, workers, threads_per_worker):
        config = {"policy": policy.name, "workers": n_workers, "threads_per_worker": threads}
        try:
            Server(model, policy, workers=n_workers, threads_per_worker=threads)
        except ValueError as exc:
            rows.append({**config, "throughput_at_sla_per_s": float("nan"), "sla_met": False, "note": str(exc)})
            continue

        def make(policy=policy, n_workers=n_workers, threads=threads):
            return Server(model, policy, workers=n_workers, threads_per_worker=threads,
                          admission=admission or Admission())
        result = throughput_at_sla(server_probe(make, requests, search, seed=seed, headroom_per_s=headroom_per_s),
                                   search)
        rows.append({**config, **result.row(), "curve": result.curve})
    frame = pd.DataFrame(rows)
    # ties (nothing met the SLA on a busy machine) go to the lower p99: the closest first
    keys = [k for k in ("throughput_at_sla_per_s", "p99_at_sla_load_ms") if k in frame]  # none ran: no p99
    frame = frame.sort_values(keys, ascending=[False, True][:len(keys)], na_position="last").reset_index(drop=True)
    ran = frame.dropna(subset=["throughput_at_sla_per_s"])
    if len(ran) and not ran["sla_met"].any():
        closest = ran.loc[ran["p99_at_sla_load_ms"].idxmin()]
        frame.attrs["note"] = (f"no configuration meets p99 <= {search.max_p99_ms:g} ms; the closest is "
                               f"{closest['policy']} x{closest['workers']} with p99 "
                               f"{closest['p99_at_sla_load_ms']:.3g} ms at its best probe: raise the limit or serve "
                               "a faster candidate")
    return frame


def sweep_load(make_server: Callable[[], Server], requests: Sequence[dict], rates: Sequence[float], *,
               duration_s: float = 1.0, seed: int = 0, headroom_per_s: float | None = None,
               label: str | None = None) -> pd.DataFrame:
    """Latency vs offered load: one Poisson run per rate (ascending), a fresh server each; stops after
    the first run that over-saturates (the rest would too). One summary row per rate."""
    rows = []
    for rate in sorted(rates):
        result = loadgen.run(make_server(), requests, Poisson(rate, duration_s=duration_s), seed=seed,
                             headroom_per_s=headroom_per_s, saturation_s=0.5, label=label)
        rows.append(result.summary)
        if result.summary["stopped_early"]:
            break
    return pd.DataFrame(rows)


def candidate_frame(candidates: Sequence[Any], requests: Sequence[dict], *,
                    policies: Sequence[Policy] = (NoBatching(),), workers: Sequence[int] = (1,),
                    search: SlaSearch = SlaSearch(),
                    stated_load_per_s: float | None = None, headroom_per_s: float | None = None,
                    seed: int = 0) -> pd.DataFrame:
    """Serving figures per candidate, a companion to a study's results (join on `candidate`): its best
    configuration and throughput at the SLA and, at `stated_load_per_s`, its p99 and shed rate there."""
    rows = []
    for candidate in candidates:
        configs = search_configs(candidate, requests, policies=policies, workers=workers, search=search,
                                 seed=seed, headroom_per_s=headroom_per_s)
        best = {k: v for k, v in configs.iloc[0].items() if k != "curve"}
        row = {"candidate": getattr(candidate, "name", str(candidate)), **best}
        if stated_load_per_s:
            server = Server(candidate, parse_policy(best["policy"]), workers=int(best["workers"]))
            duration = max(search.probe_s, 1.2 * search.min_requests / stated_load_per_s)
            summary = loadgen.run(server, requests, Poisson(stated_load_per_s, duration_s=duration), seed=seed,
                                  headroom_per_s=headroom_per_s, saturation_s=0.5).summary
            row.update(stated_load_per_s=stated_load_per_s, p99_at_stated_load_ms=summary["p99_ms"],
                       shed_rate_at_stated_load=summary["shed"] / max(summary["requests"], 1),
                       failed_rate_at_stated_load=summary["failed_rate"])
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values(["throughput_at_sla_per_s", "p99_at_sla_load_ms"], ascending=[False, True],
                                           na_position="last").reset_index(drop=True)
    if len(frame) and not frame["sla_met"].any():
        closest = frame.loc[frame["p99_at_sla_load_ms"].idxmin()]
        frame.attrs["note"] = (f"no candidate meets p99 <= {search.max_p99_ms:g} ms; the closest is "
                               f"{closest['candidate']} with p99 {closest['p99_at_sla_load_ms']:.3g} ms "
                               "at its best probe: raise the limit or optimize further")
    return frame
