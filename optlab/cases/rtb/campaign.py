"""The campaign: its day of bid requests (`DayTraffic`), the capacity plan for it (fixed, reactive,
scale-to-zero, simulated by the serving layer's `capacity`), what each deployment costs, and the
advice in an agency's words (`recommendation`)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from optlab.serving import capacity
from optlab.serving.capacity import HOURS_PER_MONTH, SECONDS_PER_DAY, TARGET_UTILISATION

SLA_MS = 10.0
PRICE_PER_HOUR_USD = 0.085  # stated assumption: one 2-vCPU on-demand cloud VM, per hour


# ---- the campaign's traffic -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayTraffic:
    """Bid requests per second over a day: a diurnal curve between `night_per_s` and `peak_per_s`
    (highest at `peak_hour`), times `spike_factor` during the campaign spike. `seconds` shortens the
    day for smoke runs (the shape is kept, compressed)."""

    night_per_s: float = 300.0
    peak_per_s: float = 1500.0
    peak_hour: float = 20.0
    spike_factor: float = 3.0
    spike_start_hour: float = 19.0
    spike_hours: float = 1.0
    seconds: int = SECONDS_PER_DAY

    def __post_init__(self):
        if not 0 <= self.night_per_s <= self.peak_per_s:
            raise ValueError(f"need 0 <= night_per_s <= peak_per_s, got {self.night_per_s} and {self.peak_per_s}")
        if not self.spike_factor >= 1:
            raise ValueError(f"spike_factor must be >= 1, got {self.spike_factor}")
        if not 60 <= self.seconds <= SECONDS_PER_DAY:
            raise ValueError(f"seconds must be in [60, {SECONDS_PER_DAY}], got {self.seconds}")

    def rates(self) -> np.ndarray:
        """The mean rate of each second of the (possibly compressed) day."""
        hours = np.arange(self.seconds) * 24.0 / self.seconds
        shape = 0.5 * (1 + np.cos(2 * np.pi * (hours - self.peak_hour) / 24.0))
        rates = self.night_per_s + (self.peak_per_s - self.night_per_s) * shape
        spike = (hours >= self.spike_start_hour) & (hours < self.spike_start_hour + self.spike_hours)
        return np.where(spike, rates * self.spike_factor, rates)

    def counts(self, seed: int = 0) -> np.ndarray:
        """Arrivals in each second: Poisson counts around `rates()`."""
        return np.random.default_rng(seed).poisson(self.rates())



def campaign(smoke: bool) -> DayTraffic:
    """The campaign's day: 300-1,500 bid requests/s (diurnal), 3x for an hour at launch (19:00)."""
    return DayTraffic(night_per_s=300, peak_per_s=1500, spike_factor=3.0, spike_start_hour=19,
                      spike_hours=1, seconds=1440 if smoke else SECONDS_PER_DAY)


def machines_for(rate_per_s: float, throughput_at_sla_per_s: float) -> int:
    """The one sizing rule: machines so that none carries more than `TARGET_UTILISATION` of its
    measured throughput at the SLA (headroom for a stall or a burst within the second)."""
    if not throughput_at_sla_per_s > 0:
        raise ValueError("a machine that meets the SLA at no rate cannot be sized for; measure it on a quieter "
                         "machine (throughput_at_sla_per_s must be > 0)")
    return max(1, math.ceil(rate_per_s / (TARGET_UTILISATION * throughput_at_sla_per_s)))


def capacity_plan(samples_s: np.ndarray, cold_start_s: float, traffic: DayTraffic, *, smoke: bool,
                  capacity_per_s: float | None = None, price_per_hour_usd: float = PRICE_PER_HOUR_USD,
                  max_utilisation: float | None = None, operating_utilisation: float | None = None,
                  latency_floor_s: float = 0.0, machines_at_peak: int | None = None):
    """Fixed (sized for the spike) vs reactive autoscaling vs scale-to-zero for a day of `traffic`.

    `samples_s` are a replica's per-request service times measured where the plan runs it
    (`operating_point`: the same deployment at the per-machine rate of the spike), used as they are.
    `capacity_per_s` is the machine's measured throughput at the SLA: the fixed plan and the
    autoscalers' ceilings are sized from it by the one rule (`machines_for`); without it, from the
    samples' own capacity. `operating_utilisation` (the measured point's) is added to the simulated
    latency table so the day's p99 at that load is simulated, not interpolated; `latency_floor_s`
    (a delay every request pays outside the queue, measured there) is added to every latency.
    `machines_at_peak` (the plan's own count, where its operating point needed more than the rule
    gives) replaces the rule's fleet for the spike; the autoscalers' ceilings follow it."""
    if max_utilisation is not None:
        warnings.warn("capacity_plan(max_utilisation=...) is ignored: every plan uses the one sizing rule, "
                      f"TARGET_UTILISATION = {TARGET_UTILISATION:g}", DeprecationWarning, stacklevel=2)
    samples_s = np.asarray(samples_s, np.float64)
    samples_s = samples_s[np.isfinite(samples_s) & (samples_s > 0)]
    replica = capacity.Replica.measured(samples_s, servers=1, cold_start_s=cold_start_s,
                                        price_per_hour_usd=price_per_hour_usd)
    per_machine = capacity_per_s if capacity_per_s and capacity_per_s > 0 else replica.capacity_per_s
    rates = traffic.rates()
    fixed = machines_at_peak or machines_for(float(rates.max()), per_machine)
    quiet = machines_for(float(rates.min()), per_machine)
    policies = [capacity.Fixed(fixed), capacity.Reactive(quiet, 2 * fixed, interval_s=15, cooldown_s=120),
                capacity.ScaleToZero(max_replicas=2 * fixed, interval_s=15, cooldown_s=120)]
    grid = {0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95}
    if operating_utilisation is not None and 0 <= operating_utilisation < 1:
        grid.add(round(float(operating_utilisation), 4))
    table = capacity.latency_table(samples_s, 1, utilisations=sorted(grid), n=5000 if smoke else 20_000)
    table[["p50_ms", "p99_ms"]] += latency_floor_s * 1e3
    day = capacity.simulate_day(replica, traffic, policies, deadline_ms=SLA_MS, table=table)
    day.summary["per_machine_at_sla_per_s"] = per_machine
    return day


LOWER_BOUND = "a lower bound: still within the SLA at the search's highest probe"


def _missing_reason(row) -> str:
    """Why a deployment has no throughput at the SLA: its search's own note, else the rule it failed."""
    note = str(getattr(row, "note", "") or "")
    return note if note.startswith("nothing meets") else f"no rate tried met p99 <= {SLA_MS:g} ms"


def costs(goodputs: pd.DataFrame, traffic: DayTraffic,
          price_per_hour_usd: float = PRICE_PER_HOUR_USD) -> pd.DataFrame:
    """Cost per million bids at each deployment's throughput at the SLA, and machines and cost per
    month for the campaign provisioned for its spike by the one sizing rule (`machines_for`). A
    deployment that met the SLA at no rate has no figures (NaN) and says why in `note`."""
    rates = traffic.rates()
    monthly_bids = float(rates.mean()) * capacity.SECONDS_PER_DAY * capacity.DAYS_PER_MONTH
    rows = []
    for row in goodputs.itertuples():
        tput = float(row.throughput_at_sla_per_s)
        figures = {"cost_per_million_bids_usd": float("nan"), "machines_for_spike": float("nan"),
                   "cost_per_month_usd": float("nan"), "note": f"not available: {_missing_reason(row)}"}
        if tput > 0:
            machines = machines_for(float(rates.max()), tput)
            # a search still within the SLA at its highest probe measured a lower bound: the note keeps it
            bound = "a lower bound" in str(getattr(row, "note", "") or "")
            figures = {"cost_per_million_bids_usd": price_per_hour_usd / (tput * TARGET_UTILISATION * 3600) * 1e6,
                       "machines_for_spike": machines, "note": LOWER_BOUND if bound else "",
                       "cost_per_month_usd": machines * price_per_hour_usd * HOURS_PER_MONTH}
        rows.append({"deployment": row.deployment, "transport": row.transport, "throughput_at_sla_per_s": tput,
                     **figures, "bids_per_month": monthly_bids, "price_per_hour_usd": price_per_hour_usd})
    return pd.DataFrame(rows)
