"""What a candidate costs to serve, from a machine's price per hour and its measured throughput.

Formulas (throughput_per_s: predictions per second one machine sustains, measured;
utilisation: the fraction of that capacity a real service uses on average, since servers
run below saturation to keep p99 latency low):

    cost_per_prediction_usd = price_per_hour_usd / (3600 * throughput_per_s * utilisation)
    cost_per_1k_usd         = 1_000 * cost_per_prediction_usd
    cost_per_1m_usd         = 1_000_000 * cost_per_prediction_usd
    machines_needed         = ceil(requests_per_s / (throughput_per_s * utilisation))
    monthly_cost_usd        = machines_needed * price_per_hour_usd * hours_per_month  (730 h)
    cost_per_1m_output_tokens_usd = 1e6 * price_per_hour_usd / (3600 * output_tokens_per_s * utilisation)

A generation candidate (a language model behind a token server) is priced per output token from its
`output_tokens_per_s`: the tokens per second all its requests together received on one machine, measured
under load (the serving run closest to its capacity at the SLA gives the fairest figure).

`throughput_per_s` is each candidate's best point of its batch sweep. Two candidates' costs
compare like with like only at one batch size: `compare` finds it (a sweep point cut by the time
budget on one side must not pit batch 32 against batch 1) or says why there is none.

Monthly cost counts whole machines (you rent machines, not fractions); the per-prediction
costs are the marginal figure. Prices in `PRICES` are illustrative list prices: check your
provider.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

HOURS_PER_MONTH = 730.0  # 365 * 24 / 12
DEFAULT_UTILISATION = 0.5
PRICE_NOTE = "illustrative list prices, check your provider"


@dataclass(frozen=True)
class Price:
    """A labelled price per hour of one machine."""

    label: str
    price_per_hour_usd: float
    description: str = ""
    note: str = PRICE_NOTE

    def __post_init__(self):
        _check_price(self.price_per_hour_usd)


def price(preset_or_usd: str | float | Price, label: str | None = None) -> Price:
    """A `Price` from a preset name in `PRICES`, a custom price per hour in USD, or a Price."""
    if isinstance(preset_or_usd, Price):
        return preset_or_usd
    if isinstance(preset_or_usd, str):
        if preset_or_usd not in PRICES:
            raise ValueError(f"unknown price preset {preset_or_usd!r}; choose one of {', '.join(PRICES)} "
                             f"or pass a price per hour in USD (e.g. 0.25)")
        return PRICES[preset_or_usd]
    _check_price(preset_or_usd)
    return Price(label or f"custom (${float(preset_or_usd):g}/h)", float(preset_or_usd), note="custom price")


def _check_price(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"price_per_hour_usd={value!r} must be a positive number of US dollars per hour "
                         f"(e.g. 0.10 for a small CPU VM), or a preset name: {', '.join(PRICES)}")


def _check_utilisation(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 < value <= 1:
        hint = f" (a fraction: use {value / 100:g} for {value:g} percent)" if isinstance(value, (int, float)) \
            and 1 < value <= 100 else ""
        raise ValueError(f"utilisation={value!r} must be in (0, 1]{hint}; 0.5 means machines run at half "
                         f"their measured throughput on average")


def _check_requests(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"requests_per_s={value!r} must be a number of requests per second >= 0 "
                         f"(e.g. 200; 1M requests/day is about 11.6 per second)")


# Typical on-demand list prices (2024-2025, USD, Linux, one region): illustrative only.
PRICES: dict[str, Price] = {
    "cpu-small": Price("small cloud CPU VM (2 vCPU, 8 GB)", 0.10, "e.g. a general-purpose 2-vCPU instance"),
    "cpu-large": Price("large cloud CPU VM (32 vCPU, 128 GB)", 1.60, "e.g. a general-purpose 32-vCPU instance"),
    "gpu-h100": Price("H100 GPU instance (1 GPU)", 4.00, "one H100 80 GB; prices vary widely by provider"),
}


@dataclass(frozen=True)
class CostEstimate:
    """The cost of serving one candidate on one kind of machine (see the module docstring)."""

    price_per_hour_usd: float
    throughput_per_s: float
    utilisation: float
    cost_per_prediction_usd: float
    cost_per_1k_usd: float
    cost_per_1m_usd: float
    requests_per_s: float | None = None
    machines_needed: int | None = None
    monthly_cost_usd: float | None = None


def estimate(price_per_hour_usd: float, throughput_per_s: float, *, utilisation: float = DEFAULT_UTILISATION,
             requests_per_s: float | None = None, hours_per_month: float = HOURS_PER_MONTH) -> CostEstimate:
    """Cost per prediction / 1k / 1M, and (given requests_per_s) machines and monthly cost."""
    _check_price(price_per_hour_usd)
    _check_utilisation(utilisation)
    if isinstance(throughput_per_s, bool) or not isinstance(throughput_per_s, (int, float, np.integer, np.floating)) \
            or not math.isfinite(throughput_per_s) or throughput_per_s <= 0:
        raise ValueError(f"throughput_per_s={throughput_per_s!r} must be a positive measured throughput "
                         f"(predictions per second)")
    per_prediction = price_per_hour_usd / (3600.0 * throughput_per_s * utilisation)
    machines = monthly = None
    if requests_per_s is not None:
        _check_requests(requests_per_s)
        machines = machines_needed(requests_per_s, throughput_per_s, utilisation)
        monthly = machines * price_per_hour_usd * hours_per_month
    return CostEstimate(float(price_per_hour_usd), float(throughput_per_s), float(utilisation), per_prediction,
                        1e3 * per_prediction, 1e6 * per_prediction,
                        None if requests_per_s is None else float(requests_per_s), machines, monthly)


def machines_needed(requests_per_s: float, throughput_per_s: float, utilisation: float = DEFAULT_UTILISATION) -> int:
    """ceil(requests_per_s / (throughput_per_s * utilisation)); 0 for no traffic."""
    if requests_per_s == 0:
        return 0
    return int(math.ceil(requests_per_s / (throughput_per_s * utilisation) - 1e-9))


TOKENS_COLUMN = "output_tokens_per_s"


def token_cost(prices, output_tokens_per_s, utilisation: float = DEFAULT_UTILISATION):
    """Cost of one output token (USD): price per hour over the tokens an hour of the machine serves at
    `utilisation`; NaN where the tokens/s is missing or not positive (works on numbers and Series)."""
    import pandas as pd

    tokens = pd.to_numeric(pd.Series(output_tokens_per_s), errors="coerce").astype("float64")
    tokens = tokens.where(tokens > 0)
    prices = prices if isinstance(prices, pd.Series) else pd.Series(prices, index=tokens.index, dtype="float64")
    tokens.index = prices.index
    return prices / (3600.0 * tokens * utilisation)


def with_costs(df, price_per_hour_usd: float | str | Price | Any, *, utilisation: float = DEFAULT_UTILISATION,
               requests_per_s: float | None = None, hours_per_month: float = HOURS_PER_MONTH,
               throughput_column: str = "throughput_per_s"):
    """A copy of `df` with cost columns from its `throughput_per_s` (the input is not changed).

    Adds price_per_hour_usd, utilisation, cost_per_1k_usd, cost_per_1m_usd (and, for generation rows
    with `output_tokens_per_s`, cost_per_1m_output_tokens_usd), and with
    `requests_per_s`: requests_per_s, machines_needed, monthly_cost_usd. Rows without a
    positive throughput (error rows) get NaN costs. `price_per_hour_usd` may be a number, a
    preset name, a `Price`, or one value per row (a sequence or Series, e.g. reference rows
    measured on a GPU priced as a GPU).
    """
    import pandas as pd

    _check_utilisation(utilisation)
    if requests_per_s is not None:
        _check_requests(requests_per_s)
    out = df.copy()
    if isinstance(price_per_hour_usd, (str, Price, int, float, np.integer, np.floating)) \
            and not isinstance(price_per_hour_usd, bool):
        prices = pd.Series(price(price_per_hour_usd).price_per_hour_usd, index=out.index, dtype="float64")
    else:
        prices = pd.Series(np.asarray(price_per_hour_usd, dtype="float64"), index=out.index)
        if (~(prices > 0)).any():
            raise ValueError("every per-row price_per_hour_usd must be a positive number of US dollars per hour")
    if throughput_column in out.columns:
        throughput = pd.to_numeric(out[throughput_column], errors="coerce").astype("float64")
    else:
        throughput = pd.Series(np.nan, index=out.index, dtype="float64")
    throughput = throughput.where(throughput > 0)
    per_prediction = prices / (3600.0 * throughput * utilisation)
    out["price_per_hour_usd"] = prices
    out["utilisation"] = float(utilisation)
    out["cost_per_1k_usd"] = 1e3 * per_prediction
    out["cost_per_1m_usd"] = 1e6 * per_prediction
    if TOKENS_COLUMN in out.columns:
        out["cost_per_1m_output_tokens_usd"] = 1e6 * token_cost(prices, out[TOKENS_COLUMN], utilisation)
    if requests_per_s is not None:
        machines = np.ceil(requests_per_s / (throughput * utilisation) - 1e-9)
        if requests_per_s == 0:
            machines = machines.where(throughput.isna(), 0.0)
        out["requests_per_s"] = float(requests_per_s)
        out["machines_needed"] = machines
        out["monthly_cost_usd"] = machines * prices * hours_per_month
    return out


# --- like with like -------------------------------------------------------------------

@dataclass(frozen=True)
class SameBatch:
    """Two candidates' throughput at one batch size both measured (`compare`); `note` says why it
    is not the first one's own best batch size, when it is not."""

    batch_size: int
    throughput_per_s: float  # the first candidate's
    other_throughput_per_s: float
    note: str = ""

    @property
    def ratio(self) -> float:
        """How many times the first candidate's throughput is the other's (cost is its inverse at one price)."""
        return self.throughput_per_s / self.other_throughput_per_s


def sweep_throughputs(row: dict) -> dict[int, float]:
    """{batch size: predictions per second} from a results row's throughput sweep (`sweep_json`);
    empty when the row has none (a reference row, an error)."""
    text = row.get("sweep_json")
    if not isinstance(text, str) or not text:
        return {}
    try:
        points = json.loads(text)
    except ValueError:
        return {}
    out = {}
    for point in points:
        value = point.get("throughput_per_s")
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            out[int(point["batch_size"])] = float(value)
    return out


def compare(row: dict, other: dict, *, names: tuple[str, str] = ("the candidate", "the baseline")) \
        -> SameBatch | str:
    """Throughput of `row` against `other` at the same batch size, or a sentence saying why no such
    comparison exists. The batch size is `row`'s best one (`throughput_batch_size`) when `other`
    measured it too, else the largest both measured: a sweep point cut by the time budget on one
    side must not pit batch 32 against batch 1."""
    mine, theirs = sweep_throughputs(row), sweep_throughputs(other)
    if not mine or not theirs:
        lacking = names[0] if not mine else names[1]
        return f"not available: {lacking} has no throughput sweep to compare at one batch size"
    best = row.get("throughput_batch_size")
    best = int(best) if isinstance(best, (int, float, np.integer, np.floating)) and math.isfinite(best) \
        else max(mine, key=mine.get)
    if best in mine and best in theirs:
        return SameBatch(best, mine[best], theirs[best])
    common = sorted(set(mine) & set(theirs))
    if not common:
        return (f"not available: no batch size was measured for both ({names[0]}: "
                f"{', '.join(map(str, sorted(mine)))}; {names[1]}: {', '.join(map(str, sorted(theirs)))})")
    size = common[-1]
    missing = names[1] if best not in theirs else names[0]
    return SameBatch(size, mine[size], theirs[size],
                     note=f"compared at batch {size}, the largest both measured ({missing}'s batch {best} point "
                          f"was not measured)")
