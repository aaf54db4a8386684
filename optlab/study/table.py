"""A study's results table: a pure function of its rows, its pricing and extra figures.

    results_table(rows, Pricing("cpu-small"), extra=serving_figures) -> DataFrame

`rows` are the stored row dicts (baseline first, as a Study orders them); `extra` is a table
of further figures per candidate (e.g. throughput at the SLA from `Study.serve`), joined by
candidate name. Costs are derived from the measured throughput and the pricing here, and only
here, so a price change, a subscriber's row and `Study.results` always agree, and nothing is
re-measured to reprice.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from optlab.study import costs as costs_module

# Always present in a results table, in this order; every other column follows.
COLUMNS = (
    "candidate", "recipe", "family", "runtime", "device", "status", "error", "source",
    "metric", "quality", "quality_drop", "quality_drop_ci_low", "quality_drop_ci_high", "agreement",
    "p50_ms", "p95_ms", "p99_ms", "throughput_per_s", "size_bytes", "size_mb", "peak_rss_mb", "cold_start_ms",
    "price_per_hour_usd", "utilisation", "cost_per_1k_usd", "cost_per_1m_usd",
    "recipe_json", "fingerprint", "cached",
)
DEFAULT_CPU_PRICE, DEFAULT_GPU_PRICE = "cpu-small", "gpu-h100"


@dataclass(frozen=True)
class Pricing:
    """What a study's candidates cost to serve (a derived view: changing it re-measures nothing).

    price_per_hour_usd: a number (USD per machine-hour), a preset name of
    `optlab.study.costs.PRICES`, a `costs.Price`, or None: "cpu-small", or "gpu-h100" for a
    CUDA baseline (see `for_device`). utilisation: the share of measured capacity a real
    service uses. requests_per_s: traffic to size machines and a monthly bill for (optional).
    """

    price_per_hour_usd: Any = None
    utilisation: float = costs_module.DEFAULT_UTILISATION
    requests_per_s: float | None = None

    def __post_init__(self):
        # refuse a bad price, utilisation or traffic here, before any work, with costs' own messages
        if self.price_per_hour_usd is not None:
            costs_module.price(self.price_per_hour_usd)
        costs_module.with_costs(empty_table(), DEFAULT_CPU_PRICE, utilisation=self.utilisation,
                                requests_per_s=self.requests_per_s)

    def for_device(self, device: Any) -> "Pricing":
        """This pricing with its price resolved to a `costs.Price` (None: by the device's kind)."""
        chosen = self.price_per_hour_usd
        if chosen is None:
            chosen = DEFAULT_GPU_PRICE if str(device).startswith("cuda") else DEFAULT_CPU_PRICE
        return dataclasses.replace(self, price_per_hour_usd=costs_module.price(chosen))

    @property
    def price(self) -> costs_module.Price:
        """The price as a `costs.Price` (a CPU machine's when none was chosen)."""
        return costs_module.price(DEFAULT_CPU_PRICE if self.price_per_hour_usd is None else self.price_per_hour_usd)


def empty_table() -> pd.DataFrame:
    """A results table without rows: every column of `COLUMNS`, no values."""
    return pd.DataFrame({column: pd.Series(dtype="object") for column in COLUMNS})


def results_table(rows: Iterable[dict[str, Any]], pricing: Pricing, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per row dict, `COLUMNS` first, `extra`'s figures joined by candidate, costs from `pricing`.

    A row measured elsewhere may carry its own machine's price (`reference_price_per_hour_usd`,
    e.g. a GPU's rows priced as a GPU); every other row is priced with `pricing`. Columns of
    `extra` that the rows already have are left to the rows (a measurement wins over a join).
    """
    rows = list(rows)
    df = pd.DataFrame(rows) if rows else empty_table()
    if extra is not None and len(extra) and len(df):
        if "candidate" not in extra.columns:
            raise ValueError("extra figures need a 'candidate' column to join on")
        joined = extra.drop(columns=[c for c in extra.columns if c != "candidate" and c in df.columns])
        df = df.merge(joined.drop_duplicates("candidate", keep="last"), on="candidate", how="left")
    for column in COLUMNS:
        if column not in df.columns:
            df[column] = None
    default = pricing.price.price_per_hour_usd
    prices = [row.get("reference_price_per_hour_usd") or default for row in rows] if rows else default
    df = costs_module.with_costs(df, prices, utilisation=pricing.utilisation, requests_per_s=pricing.requests_per_s)
    return df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]].reset_index(drop=True)


def merge_extra(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Extra figures per candidate with `new`'s rows replacing `old`'s for the same candidates."""
    if "candidate" not in getattr(new, "columns", ()):
        raise ValueError("extra figures need a DataFrame with a 'candidate' column (see Study.serve)")
    if old is None:
        return new.reset_index(drop=True)
    return pd.concat([old[~old["candidate"].isin(new["candidate"])], new]).reset_index(drop=True)
