"""Serving figures for a study's candidates: throughput at the SLA beside the loop figures.

`serve(study, requests, ...)` rebuilds each successful candidate of the study (the baseline as
given, every other one from its stored recipe, as the study built it) with one thread per worker,
puts it behind optlab's in-process server and finds, for each batching policy asked for, the
highest offered load whose p99 stays within the limit (`optlab.serving.sla`). One row per
candidate, its best policy first, joined onto `study.results` by candidate name, so the trade-off
explorer can draw quality against *served* throughput and `recommend(objective="served")` can rank
by it. A candidate that cannot be rebuilt or served gets a row with `serving_error`; the others go on.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

# Columns `serve` adds to `Study.results` (NaN/None for candidates not served).
COLUMNS = ("throughput_at_sla_per_s", "p99_at_sla_load_ms", "serving_max_p99_ms", "serving_policy",
           "serving_workers", "serving_probes", "serving_note", "serving_error")


def serve(study: Any, requests: Sequence[dict] | None = None, *, max_p99_ms: float = 10.0,
          policies: Sequence[Any] | None = None, candidates: Sequence[str] | None = None, search: Any = None,
          headroom_per_s: float | None = None, n_requests: int = 2000, seed: int = 0):
    """Throughput at the SLA per candidate (a DataFrame, best first); `study.results` gains its columns.

    requests: single-row request payloads (default: `n_requests` rows of the study's test split).
    policies: batching policies tried per candidate (default: none, and dynamic up to 64 within 2 ms).
    candidates: names to serve (default: every successful local row, the baseline included).
    search: an `optlab.serving.sla.SlaSearch` (default: one with `max_p99_ms`).
    """
    import pandas as pd

    from optlab.recipes.recipe import from_json
    from optlab.serving import policies as policy_module
    from optlab.serving import sla, workloads
    from optlab.techniques import registry

    if search is None:
        if not (isinstance(max_p99_ms, (int, float)) and math.isfinite(max_p99_ms) and max_p99_ms > 0):
            raise ValueError(f"max_p99_ms={max_p99_ms!r} must be a positive number of milliseconds, e.g. 10")
        search = sla.SlaSearch(max_p99_ms=float(max_p99_ms))
    policies = list(policies) if policies is not None else [policy_module.NoBatching(),
                                                            policy_module.DynamicBatching(64, 2.0)]
    results = study.results
    local = results[(results["status"] == "ok") & (results["source"] != "reference")]
    if candidates is not None:
        unknown = sorted(set(candidates) - set(local["candidate"]))
        if unknown:
            raise ValueError(f"no successful candidate named {', '.join(map(repr, unknown))} in this study; "
                             f"choose from: {', '.join(map(repr, local['candidate']))}")
        local = local[local["candidate"].isin(list(candidates))]
    if not len(local):
        raise ValueError("serve(): the study has no successful candidate yet; call study.run() first")
    if requests is None:
        requests = workloads.single_rows(study.data, n_requests, seed=seed)

    rows = []
    for record in local.to_dict("records"):
        name = str(record["candidate"])
        try:
            candidate = _rebuild(study, record, from_json, registry)
            frame = sla.candidate_frame([candidate], requests, policies=policies, search=search,
                                        headroom_per_s=headroom_per_s, seed=seed)
            best = frame.iloc[0]
            rows.append({"candidate": name, "throughput_at_sla_per_s": float(best["throughput_at_sla_per_s"]),
                         "p99_at_sla_load_ms": float(best["p99_at_sla_load_ms"]),
                         "serving_max_p99_ms": search.max_p99_ms, "serving_policy": best["policy"],
                         "serving_workers": int(best["workers"]), "serving_probes": int(best["probes"]),
                         "serving_note": best.get("note") or frame.attrs.get("note") or "", "serving_error": None})
        except Exception as error:  # noqa: BLE001 - one candidate that cannot be served is a row, not the end
            rows.append({"candidate": name, "throughput_at_sla_per_s": math.nan, "p99_at_sla_load_ms": math.nan,
                         "serving_max_p99_ms": search.max_p99_ms, "serving_policy": None, "serving_workers": None,
                         "serving_probes": 0, "serving_note": "",
                         "serving_error": f"{type(error).__name__}: {error}"})
    table = pd.DataFrame(rows, columns=["candidate", *COLUMNS])
    study.set_serving(table)
    return table.sort_values("throughput_at_sla_per_s", ascending=False, na_position="last",
                             kind="stable").reset_index(drop=True)


def _rebuild(study: Any, record: dict, from_json: Any, registry: Any) -> Any:
    """The candidate a results row describes, built again with one thread (a server worker's share)."""
    if record.get("family") == "baseline":
        return study.baseline
    recipe = from_json(str(record["recipe_json"]))
    workdir = study.results_dir / "artifacts" / "serving" / str(record["fingerprint"])[:12]
    workdir.mkdir(parents=True, exist_ok=True)
    candidate = registry.apply(recipe, study.baseline.model, study.data, threads=1, workdir=workdir)
    candidate.name = str(record["candidate"])
    return candidate

