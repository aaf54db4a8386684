"""Serving figures for a study's candidates: throughput at the SLA beside the loop figures.

`serving_table(results, baseline, data, artifacts, ...)` rebuilds each successful candidate of a
results table (the baseline as given, every other one from its stored recipe, as the study built
it) with one thread per worker, puts it behind optlab's in-process server and finds, for each
batching policy asked for, the highest offered load whose p99 stays within the limit
(`optlab.serving.sla`). It returns one row per candidate and changes nothing: `Study.serve` keeps
the table as extra figures that `optlab.study.table.results_table` joins by candidate name, so the
trade-off explorer can draw quality against *served* throughput and `recommend(objective="served")`
can rank by it. A candidate that cannot be rebuilt or served gets a row with `serving_error`; the
others go on.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from optlab.recipes.recipe import from_json
from optlab.serving import policies as policy_module
from optlab.serving import sla, workloads
from optlab.techniques import registry

# Columns the serving table adds to a study's results (NaN/None for candidates not served).
COLUMNS = ("throughput_at_sla_per_s", "p99_at_sla_load_ms", "serving_max_p99_ms", "serving_policy",
           "serving_workers", "serving_probes", "serving_note", "serving_error")


def serving_table(results: pd.DataFrame, baseline: Any, data: Any, artifacts: Callable[[str], Path],
                  requests: Sequence[dict] | None = None, *, max_p99_ms: float = 10.0,
                  policies: Sequence[Any] | None = None, candidates: Sequence[str] | None = None,
                  search: Any = None, headroom_per_s: float | None = None, n_requests: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Throughput at the SLA per successful local candidate of `results`: a DataFrame, best first.

    artifacts: fingerprint -> a folder for that candidate's rebuilt files (`Store.serving_dir`).
    requests: single-row request payloads (default: `n_requests` rows of `data`'s test split).
    policies: batching policies tried per candidate (default: none, and dynamic up to 64 within 2 ms).
    candidates: names to serve (default: every successful local row, the baseline included).
    search: an `optlab.serving.sla.SlaSearch` (default: one with `max_p99_ms`).
    """
    if search is None:
        if not (isinstance(max_p99_ms, (int, float)) and math.isfinite(max_p99_ms) and max_p99_ms > 0):
            raise ValueError(f"max_p99_ms={max_p99_ms!r} must be a positive number of milliseconds, e.g. 10")
        search = sla.SlaSearch(max_p99_ms=float(max_p99_ms))
    policies = list(policies) if policies is not None else [policy_module.NoBatching(),
                                                            policy_module.DynamicBatching(64, 2.0)]
    local = _servable(results, candidates)
    if requests is None:
        requests = workloads.single_rows(data, n_requests, seed=seed)
    rows = []
    for record in local.to_dict("records"):
        try:
            candidate = _rebuild(record, baseline, data, artifacts)
            frame = sla.candidate_frame([candidate], requests, policies=policies, search=search,
                                        headroom_per_s=headroom_per_s, seed=seed)
            rows.append(_served_row(record, frame, search))
        except Exception as error:  # noqa: BLE001 - one candidate that cannot be served is a row, not the end
            rows.append({"candidate": str(record["candidate"]), "throughput_at_sla_per_s": math.nan,
                         "p99_at_sla_load_ms": math.nan, "serving_max_p99_ms": search.max_p99_ms,
                         "serving_policy": None, "serving_workers": None, "serving_probes": 0, "serving_note": "",
                         "serving_error": f"{type(error).__name__}: {error}"})
    table = pd.DataFrame(rows, columns=["candidate", *COLUMNS])
    return table.sort_values("throughput_at_sla_per_s", ascending=False, na_position="last",
                             kind="stable").reset_index(drop=True)


def _servable(results: pd.DataFrame, candidates: Sequence[str] | None) -> pd.DataFrame:
    """The successful local rows of `results` (only `candidates` if named), refusing unknown names."""
    local = results[(results["status"] == "ok") & (results["source"] != "reference")]
    if candidates is not None:
        unknown = sorted(set(candidates) - set(local["candidate"]))
        if unknown:
            raise ValueError(f"no successful candidate named {', '.join(map(repr, unknown))} in this study; "
                             f"choose from: {', '.join(map(repr, local['candidate']))}")
        local = local[local["candidate"].isin(list(candidates))]
    if not len(local):
        raise ValueError("serve(): the study has no successful candidate yet; call study.run() first")
    return local


def _served_row(record: dict, frame: pd.DataFrame, search: Any) -> dict[str, Any]:
    """The serving table's row for one candidate: its best policy's figures."""
    best = frame.iloc[0]
    return {"candidate": str(record["candidate"]), "throughput_at_sla_per_s": float(best["throughput_at_sla_per_s"]),
            "p99_at_sla_load_ms": float(best["p99_at_sla_load_ms"]), "serving_max_p99_ms": search.max_p99_ms,
            "serving_policy": best["policy"], "serving_workers": int(best["workers"]),
            "serving_probes": int(best["probes"]),
            "serving_note": best.get("note") or frame.attrs.get("note") or "", "serving_error": None}


def _rebuild(record: dict, baseline: Any, data: Any, artifacts: Callable[[str], Path]) -> Any:
    """The candidate a results row describes, built again with one thread (a server worker's share)."""
    if record.get("family") == "baseline":
        return baseline
    recipe = from_json(str(record["recipe_json"]))
    workdir = artifacts(str(record["fingerprint"]))
    candidate = registry.apply(recipe, baseline.model, data, threads=1, workdir=workdir)
    candidate.name = str(record["candidate"])
    return candidate
