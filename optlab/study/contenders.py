"""Before a recommendation names a winner: re-time the top contenders and the baseline side by side.

A study measures its candidates one after the other, seconds or minutes apart. On a shared
machine that is not one machine: the same study of one model, run three times beside other work,
recommended OpenVINO at 2.64x, then the baseline, then OpenVINO at 2.96x, where an interleaved
timing gave 1.32-1.38x. So `recommend` here first ranks the rows as `optlab.study.frontier`
does, then rebuilds the winner, the runner-up and the baseline, times them interleaved
(`optlab.instruments.interleaved`: A B C, B C A, ... in short turns) at the batch size the
claim is about, and recommends again quoting those ratios with their 95% intervals. Where an
interval includes 1 the words say "too close to call on this machine" and name both.

`retime=False` (or rows without a study that can rebuild them, e.g. loaded from a results
folder) keeps the separate measurements, and the words say so.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace
from typing import Any

from optlab.instruments.interleaved import speed_ratio, time_interleaved
from optlab.instruments.latency import make_batches, torch_threads
from optlab.recipes.recipe import from_json
from optlab.study import frontier
from optlab.study.explanation import Ratio, SideBySide
from optlab.techniques import registry

# Rebuilt candidates, per study, by row fingerprint: asking again (a new SLA) does not rebuild them.
_BUILT: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()
RETIMED_OBJECTIVES = ("cost", "latency")  # size is not a timing; served throughput is a server's figure
MAX_REBUILD_S = 20.0  # a contender whose recipe took longer to apply (INC autotune, say) is not rebuilt


@dataclass(frozen=True)
class Retiming:
    """How the contenders are re-timed: `rounds` interleaved rounds of `turn_s` seconds per
    candidate (None: a sixteenth of the study's latency budget, within 0.02-0.1 s)."""

    rounds: int = 8
    turn_s: float | None = None
    n_boot: int = 2000

    def turn_for(self, workload: Any) -> float:
        if self.turn_s is not None:
            return float(self.turn_s)
        return min(max(float(getattr(workload, "budget_s", 1.0)) / 16, 0.02), 0.1)


def recommend(study: Any, df: Any, *, retime: bool = True, retiming: Retiming = Retiming(),
              **options: Any) -> frontier.Recommendation:
    """`optlab.study.frontier.recommend(df, **options)`, its winner confirmed side by side.

    With `retime` (and a winner that is not alone), the winner, the runner-up and the baseline are
    rebuilt from their recipes and re-timed interleaved; the returned recommendation quotes those
    ratios (`side_by_side`) and, where the first two cannot be told apart, lists them in `too_close`.
    A contender that cannot be rebuilt is left out of the re-timing, said in the explanation."""
    first = frontier.recommend(df, **options)
    if not retime or not first.met or first.objective not in RETIMED_OBJECTIVES:
        return first
    rows = [r for r in (first.row, first.runner_up, _baseline_row(df)) if r is not None]
    rows = list({str(r.get("candidate")): r for r in rows if r.get("status", "ok") == "ok"}.values())
    costly = [r for r in rows if _apply_s(r) > MAX_REBUILD_S and r.get("family") != "baseline"]
    rows = [r for r in rows if r not in costly]
    winner_costly = any(r.get("candidate") == first.candidate for r in costly)
    if len(rows) < 2 or winner_costly:
        if not costly:
            return first
        names = ", ".join(f"{r.get('candidate')} took {_apply_s(r):.0f} s to build" for r in costly)
        return replace(first, explanation=f"{first.explanation} (Not re-timed side by side: {names}; "
                                          f"the ratios come from separate measurements.)")
    try:
        side = side_by_side(study, rows, batch_size=_batch_for(first, study), retiming=retiming)
    except Exception as error:  # noqa: BLE001 - the separate measurements still stand, and the words say so
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return replace(first, explanation=f"{first.explanation} (Side-by-side re-timing was not possible: "
                                          f"{type(error).__name__}: {reason}.)")
    return frontier.recommend(df, side_by_side=side, **options)


def side_by_side(study: Any, rows: list[dict], *, batch_size: int | None,
                 retiming: Retiming = Retiming()) -> SideBySide:
    """Rebuild the candidates of `rows` (the first is the one the claim is about) and time them
    interleaved at `batch_size` (see `compare`)."""
    candidates = {str(r.get("candidate")): candidate_for(study, r) for r in rows}
    inputs = study.inputs if study.inputs is not None else (
        study.data.requests if getattr(study.data, "requests", None) else study.data.test.inputs)
    return compare(candidates, inputs, batch_size=batch_size, threads=getattr(study.workload, "threads", None),
                   retiming=replace(retiming, turn_s=retiming.turn_for(study.workload)))


def compare(candidates: dict[str, Any], inputs: Any, *, batch_size: int | None, threads: int | None = None,
            retiming: Retiming = Retiming()) -> SideBySide:
    """Time `candidates` (name -> Candidate) interleaved on `inputs` cut to `batch_size`; the speed
    ratio of every pair (the winner may change when the runner-up runs clearly faster side by side)."""
    names = list(candidates)
    batches = make_batches(inputs, batch_size, name=names[0])
    with torch_threads(threads):
        run = time_interleaved({n: c.predict_fn for n, c in candidates.items()}, batches,
                               rounds=retiming.rounds, turn_s=retiming.turn_s or 0.05)
    ratios = tuple(Ratio(one, other, *speed_ratio(run, one, other, n_boot=retiming.n_boot))
                   for i, one in enumerate(names) for other in names[i + 1:])
    return SideBySide(batch_size, run.rounds, ratios, run.busy.other_cpu_share)


def candidate_for(study: Any, row: dict) -> Any:
    """The candidate a results row describes: the study's baseline, or built again from its recipe
    (as the study built it, with the workload's threads); kept for the next question."""
    if row.get("family") == "baseline":
        return study.baseline
    built = _BUILT.setdefault(study, {})
    key = str(row.get("fingerprint") or row.get("candidate"))
    if key not in built:
        workdir = study.results_dir / "artifacts" / "contenders" / key[:12]
        workdir.mkdir(parents=True, exist_ok=True)
        candidate = registry.apply(from_json(str(row["recipe_json"])), study.baseline.model, study.data,
                                   threads=getattr(study.workload, "threads", None), workdir=workdir)
        candidate.name = str(row.get("candidate"))
        built[key] = candidate
    return built[key]


def _apply_s(row: dict) -> float:
    try:
        value = float(row.get("apply_s"))
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _baseline_row(df: Any) -> dict | None:
    if "family" not in getattr(df, "columns", ()):
        return None
    found = df[df["family"] == "baseline"]
    return found.iloc[0].to_dict() if len(found) else None


def _batch_for(rec: frontier.Recommendation, study: Any) -> int | None:
    """The batch size the claim is about: the winner's throughput batch for cost, else the
    workload's (the p99 latency batch)."""
    if rec.objective == "cost":
        size = rec.row.get("throughput_batch_size")
        if isinstance(size, (int, float)) and math.isfinite(size) and size >= 1:
            return int(size)
    return getattr(study.workload, "batch_size", 1)
