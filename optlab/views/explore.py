"""What the trade-off explorer shows, as pure functions of (results, state): no widgets, no study.

`ExplorerState` holds every view choice a person makes (SLA limits, price, objective, families,
axes); `explore(results, state)` prices a copy of the rows, keeps the chosen families, ranks them
and marks which meet the SLA. The explorer widget only turns controls into a state and draws the
answer, so the same answer comes from a test, a script or a report, and the study is never changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from optlab.recipes.recipe import Compile, Distill, Prune, Quantize
from optlab.study.costs import DEFAULT_UTILISATION, with_costs
from optlab.study.frontier import OBJECTIVES, Recommendation, recommend, sla_constraints
from optlab.study.frontier import meeting as frontier_meeting
from optlab.study.machines import MACHINE, machine_column
from optlab.views.plots import drawable

REFERENCE_PRICE = "reference_price_per_hour_usd"  # a reference row keeps the price of the machine it ran on


@dataclass(frozen=True)
class ExplorerState:
    """The explorer's view choices. Limits of None mean "no limit"; a price of None keeps the
    rows' own costs; families of None shows every family."""

    max_p99_ms: float | None = None
    max_quality_drop: float | None = 0.01
    objective: str = "cost"
    price_per_hour_usd: float | None = None
    utilisation: float = DEFAULT_UTILISATION
    requests_per_s: float | None = None
    families: tuple[str, ...] | None = None
    x: str = "p99_ms"
    y: str = "quality"
    machine: str | None = None  # recommend among this machine's rows (an optlab.study.machines label)
    across_machines: bool = False  # or compare rows from several machines anyway

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} is not known; choose one of {', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
class Exploration:
    """The answer for one state: the rows to draw (with `meets_sla` and `recommended` columns),
    the recommendation (None when there is none) and, then, why not (`note`).
    Unpacks as `data, recommendation = explore(...)`."""

    data: Any  # pandas.DataFrame
    recommendation: Recommendation | None
    note: str | None = field(default=None)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.data, self.recommendation))


def priced(results, state: ExplorerState):
    """A copy of `results` with cost columns at the state's price (reference rows keep the price
    of the machine they ran on); the rows as they are when the state names no price."""
    if state.price_per_hour_usd is None or results is None or len(results) == 0 \
            or "throughput_per_s" not in results.columns:
        return results.copy() if results is not None else results
    prices = [state.price_per_hour_usd] * len(results)
    if REFERENCE_PRICE in results.columns:
        own = results[REFERENCE_PRICE].tolist()
        prices = [float(o) if _positive(o) else p for o, p in zip(own, prices, strict=True)]
    return with_costs(results, prices, utilisation=state.utilisation, requests_per_s=state.requests_per_s)


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def visible(results, state: ExplorerState):
    """The drawable rows of the chosen families."""
    rows = drawable(results)
    if state.families is not None and "family" in rows.columns:
        rows = rows[rows["family"].astype(str).isin(state.families)]
    return rows.reset_index(drop=True)


def meeting(rows, max_p99_ms: float | None, max_quality_drop: float | None) -> set[str]:
    """Candidates (reference rows included) that meet the SLA: optlab.study.frontier's
    Constraint rule, the same one the chart renders."""
    return frontier_meeting(rows, sla_constraints(max_p99_ms=max_p99_ms, max_quality_drop=max_quality_drop))


def explore(results, state: ExplorerState) -> Exploration:
    """Price a copy, keep the chosen families, recommend under the SLA and mark each row:
    (chart data, recommendation). Nothing is measured and `results` is not changed.

    Rows from more than one machine get a `machine` column (the label `optlab.study.machines` owns,
    also in the chart's tooltips), and the recommendation stays within `state.machine`'s rows unless
    `state.across_machines`; with neither, the note says which machines there are and how to choose."""
    rows = visible(priced(results, state), state)
    recommendation, note = None, None
    if len(rows):
        labels = machine_column(rows)
        if labels.dropna().nunique() > 1:
            rows = rows.copy()
            rows[MACHINE] = labels
        try:
            recommendation = recommend(rows, max_p99_ms=state.max_p99_ms, max_quality_drop=state.max_quality_drop,
                                       objective=state.objective, machine=state.machine,
                                       across_machines=state.across_machines)
        except ValueError as error:
            note = str(error)
    else:
        note = "no results yet: run the study"
    chosen = getattr(recommendation, "candidate", None)
    rows = rows.copy()
    rows["meets_sla"] = rows["candidate"].isin(meeting(rows, state.max_p99_ms, state.max_quality_drop)) \
        if len(rows) else []
    rows["recommended"] = (rows["candidate"] == chosen) if len(rows) else []
    return Exploration(rows, recommendation, note)


def merge_rows(records: dict[str, dict], new_rows) -> dict[str, dict]:
    """`records` (candidate -> row, in arrival order) with `new_rows` (dicts, e.g. the rows a study
    event carries) added, or replacing the row of the same candidate in place (a skipped row that
    later ran, a row that gained serving figures). Returns a new dict; `records` is not changed."""
    out = dict(records)
    for row in new_rows:
        row = dict(row)
        out[str(row.get("candidate"))] = row
    return out


def frame(records: dict[str, dict]):
    """The rows as a DataFrame, in arrival order."""
    import pandas as pd

    return pd.DataFrame(list(records.values()))


def recipes_for(techniques, *, bits: int = 8, calibration: str = "dynamic", sparsity: float = 0.5,
                structured: bool = False, temperature: float = 4.0) -> list:
    """The recipes the explorer's experiment controls describe, one per chosen technique."""
    out = []
    for technique in techniques:
        if technique == "quantize":
            if bits == 16:
                out.append(Quantize("bf16", runtime="torch"))
            elif bits == 4:
                out.append(Quantize("weight-only-int4", runtime="inc"))
            elif calibration == "dynamic":
                out.append(Quantize("dynamic-int8", runtime="onnxruntime"))
            else:
                out.append(Quantize("static-int8", runtime="onnxruntime", calibration=calibration))
        elif technique == "prune":
            out.append(Prune(sparsity=round(float(sparsity), 4), structured=structured))
        elif technique == "distill":
            out.append(Distill(temperature=float(temperature)))
        elif technique == "compile":
            out.append(Compile(runtime="onnxruntime"))
    return out
