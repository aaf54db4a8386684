"""The two-stage section of `python -m optlab.bench cascade`: a dataset's cascade served three ways
(`optlab.serving.cascade_serving`: the expensive model alone, the cascade in one server, two-stage with the
core budget split) under the open-loop generator and throughput-at-SLA search of every serving figure.

Figures: throughput at p99 <= `SLA_MS` (median of interleaved rounds, range, every round; "noisy" when the
rounds' range is wider than `NOISY_SPREAD` of the median or a figure sits above half the generator's
headroom), the share sent on in the two-stage run at the SLA, ratios within rounds ("too close to call"
when their range includes 1), and what each costs at a traffic profile: machines (each the same core
budget) for the profile's peak by the one sizing rule (70% of throughput at the SLA), per month, and per
1M requests.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from optlab.bench.render import Col, Layout, Renderer, target
from optlab.cases.rtb.campaign import PRICE_PER_HOUR_USD, DayTraffic, machines_for
from optlab.serving.capacity import HOURS_PER_MONTH, TARGET_UTILISATION
from optlab.serving.cascade_serving import (
    EXPENSIVE_ALONE,
    ONE_SERVER,
    POLICY,
    TWO_STAGE,
    Split,
    at_rate,
    goodput_rounds,
)
from optlab.serving.loadgen import generator_headroom
from optlab.serving.rounds import headroom_flag, median_rounds, round_ratio
from optlab.serving.sla import SlaSearch
from optlab.serving.workloads import single_rows

COMMAND = "python -m optlab.bench cascade"
SLA_MS = 10.0
NOISY_SPREAD = 0.2  # rounds whose max/min differ by more than this are flagged
# The traffic profile the monthly bill is for: a product launch's day (diurnal 100-500 requests/s, 3x for
# the launch hour), the story of issue 29; machines are sized for its peak.
TRAFFIC = DayTraffic(night_per_s=100, peak_per_s=500, spike_factor=3.0, spike_start_hour=19, spike_hours=1)


def search_for(smoke: bool) -> SlaSearch:
    return SlaSearch(max_p99_ms=SLA_MS, probe_s=0.5 if smoke else 1.0, rel_tol=0.2 if smoke else 0.08,
                     start_per_s=400.0, min_per_s=25.0, max_probes=7 if smoke else 12)


def cost_row(throughput_per_s: float) -> dict[str, Any]:
    """Machines for the traffic profile's peak, per month and per 1M requests at the measured throughput."""
    if not throughput_per_s > 0:
        return {"machines_for_peak": None, "cost_per_month_usd": None, "cost_per_1m_usd": None}
    machines = machines_for(float(TRAFFIC.rates().max()), throughput_per_s)
    return {"machines_for_peak": machines, "cost_per_month_usd": machines * PRICE_PER_HOUR_USD * HOURS_PER_MONTH,
            "cost_per_1m_usd": PRICE_PER_HOUR_USD / (throughput_per_s * TARGET_UTILISATION * 3600) * 1e6}


def noisy(row: Any, headroom: float) -> str:
    """Why a deployment's figure is flagged ("" when it is not)."""
    why = []
    low, high = row["throughput_at_sla_per_s_low"], row["throughput_at_sla_per_s_high"]
    if row["rounds"] < 2:
        why.append("1 round: no range")
    elif low > 0 and high / low - 1 > NOISY_SPREAD:
        why.append(f"rounds differ by {high / low - 1:.0%}")
    elif low <= 0 < high:
        why.append("some rounds met the SLA at no rate")
    if headroom_flag(high, headroom):
        why.append("above half the generator's headroom" if headroom else "generator headroom 0")
    return "noisy: " + ", ".join(why) if why else ""


RATE_LAYOUT = Layout((
    Col("deployment", "deployment", 22, "<"),
    Col("requests", "requests", 9, spec="d"),
    Col("p50_ms", "p50 ms", 8, spec=".2f"),
    Col("p99_ms", "p99 ms", 8, spec=".2f"),
    Col("p99_sure_ms", "p99 sure", 9, spec=".2f"),
    Col("p99_unsure_ms", "p99 unsure", 11, spec=".2f"),
    Col("sent_on_share", "sent on", 8, spec=".1%"),
    Col("stopped_early", "", 16, "<", before="  ", text=lambda r: "stopped early" if r["stopped_early"] else ""),
), indent="  ")
FIXED_RATE_PER_S = 300.0

LAYOUT = Layout((
    Col("deployment", "deployment", 22, "<"),
    Col("cores", "cores", 14, "<", text=lambda r: r["cores"]),
    Col("throughput_at_sla_per_s", "at SLA /s", 10, spec=",.0f"),
    Col("range", "range (every round)", 28, "<", before="  ",
        text=lambda r: f"{r['throughput_at_sla_per_s_low']:,.0f}-{r['throughput_at_sla_per_s_high']:,.0f} "
                       f"({r['rounds_values']})"),
    Col("p99_at_sla_load_ms", "p99 ms", 8, spec=".2f"),
    Col("sent_on_share_at_sla", "sent on", 8, spec=".1%"),
    Col("machines_for_peak", "machines", 9, spec=".0f"),
    Col("cost_per_month_usd", "$/month", 9, spec=",.0f"),
    Col("cost_per_1m_usd", "$ per 1M", 9, spec=".4f"),
    Col("noisy", "", 40, "<", before="  "),
), indent="  ")


def section(out: Renderer, name: str, candidate: Any, data: Any, smoke: bool, cores: int | None = None) -> None:
    """Measure and print the two-stage section for one dataset's cascade candidate."""
    split = Split.even(cores)
    out.say(f"\ntwo-stage serving ({name}): single-row requests, open-loop Poisson load from its own process, "
            f"throughput at p99 <= {SLA_MS:g} ms; {POLICY.name} in every server; threshold "
            f"{candidate.predict_fn.threshold:.6f} (chosen on validation); core budget {split.cores}: expensive "
            f"alone and the one-server cascade on {split.cores} workers x 1 thread, two-stage {split.text} "
            f"(cheap + expensive workers x 1 thread)")
    headroom, curve = generator_headroom(sla_ms=SLA_MS, probe_s=0.3 if smoke else 0.5, refine=1 if smoke else 3)
    out.keep(f"two_stage_headroom_{name}", curve)
    out.say(f"  generator headroom (no-op server, p99 <= {0.1 * SLA_MS:g} ms): {headroom:,.0f}/s")
    runs = goodput_rounds(candidate, single_rows(data, n=1000, seed=0), split, search_for(smoke),
                          rounds=1 if smoke else 3, headroom_per_s=headroom)
    out.keep(f"two_stage_rounds_{name}", runs)
    table = median_rounds(runs)
    cores = {EXPENSIVE_ALONE: f"{split.cores} workers", ONE_SERVER: f"{split.cores} workers", TWO_STAGE: split.text}
    rows = [{**r, **cost_row(r["throughput_at_sla_per_s"]), "cores": cores[r["deployment"]],
             "noisy": noisy(r, headroom)} for r in table.to_dict("records")]
    out.table(f"two_stage_{name}", LAYOUT, rows)
    peak = float(TRAFFIC.rates().max())
    out.say(f"  cost: machines of {split.cores} cores at ${PRICE_PER_HOUR_USD}/h (stated assumption) for the "
            f"profile's peak of {peak:,.0f} requests/s (diurnal {TRAFFIC.night_per_s:.0f}-{TRAFFIC.peak_per_s:.0f}/s, "
            f"{TRAFFIC.spike_factor:g}x for the launch hour), each carrying <= {TARGET_UTILISATION:.0%} of its "
            f"throughput at the SLA; $ per 1M at that utilisation")
    payloads = single_rows(data, n=1000, seed=0)
    out.say(f"  at one rate, {FIXED_RATE_PER_S:g}/s for {1 if smoke else 3} s each: p99 of the requests the cheap "
            "model is sure of (two-stage answers them at its cheap stage; in one server they can share a batch "
            "with an unsure one) and of the unsure ones")
    fixed = at_rate(candidate, payloads, split, FIXED_RATE_PER_S, duration_s=1.0 if smoke else 3.0)
    out.table(f"two_stage_fixed_rate_{name}", RATE_LAYOUT, fixed.to_dict("records"))
    out.targets([ratio_target(runs, name, TWO_STAGE, EXPENSIVE_ALONE),
                 ratio_target(runs, name, TWO_STAGE, ONE_SERVER)], indent="  ")


def ratio_target(runs: pd.DataFrame, name: str, top: str, bottom: str) -> dict[str, Any]:
    """`top / bottom` throughput at the SLA within rounds; "too close to call" when the range includes 1."""
    ratio = round_ratio(runs, top, bottom)
    if not ratio.available:
        return target(f"[{name}] {top} / {bottom}, throughput at the SLA", None, None, COMMAND,
                      f"[{name}] {top} / {bottom}: not available (a deployment met p99 <= {SLA_MS:g} ms at no rate "
                      "in every round)")
    call = ("too close to call on this machine" if ratio.rounds > 1 and ratio.low <= 1 <= ratio.high
            else "higher" if ratio.median > 1 else "lower")
    return target(f"[{name}] {top} / {bottom}, throughput at the SLA", ratio.median, None, COMMAND,
                  f"[{name}] {top} / {bottom}, throughput at p99 <= {SLA_MS:g} ms: {ratio.text()}: {call} "
                  f"(cost per month and per 1M follow it inversely; no target set)")

