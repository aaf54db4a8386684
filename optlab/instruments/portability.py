"""Portability as a regression test: the same model on several runtimes must give the same
outputs, within a tolerance, or the check fails loudly (compiler lock-in shows up as drift)."""
from __future__ import annotations

from dataclasses import dataclass


class DriftError(AssertionError):
    """A runtime's outputs drifted from the baseline's past the tolerance."""


@dataclass(frozen=True)
class DriftCheck:
    max_abs_diff: float = 1e-3  # on logits
    min_agreement: float = 0.999  # top-1 (multiclass) or decision (binary) agreement

    def __post_init__(self):
        if not self.max_abs_diff > 0:
            raise ValueError(f"max_abs_diff={self.max_abs_diff} must be > 0 (e.g. 1e-3 for fp32 runtimes)")
        if not 0 < self.min_agreement <= 1:
            raise ValueError(f"min_agreement={self.min_agreement} must be in (0, 1], e.g. 0.999")


def check_drift(results, check: DriftCheck = DriftCheck(), *, candidates=None):
    """Rows of `results` (a study DataFrame) with a `drift_ok` column; raises DriftError naming
    every candidate past the tolerance. `candidates` limits the check to those names (e.g.
    the fp32 runtime ports; quantized candidates are expected to move)."""
    rows = results[results["status"] == "ok"]
    if candidates is not None:
        missing = sorted(set(candidates) - set(rows["candidate"]))
        if missing:
            raise DriftError(
                f"no measured result for {missing}; they failed or were not run, so their drift is unknown"
            )
        rows = rows[rows["candidate"].isin(candidates)]
    rows = rows[["candidate", "runtime", "max_abs_diff", "agreement"]].copy()
    rows["drift_ok"] = (rows["max_abs_diff"] <= check.max_abs_diff) & (rows["agreement"] >= check.min_agreement)
    failed = rows[~rows["drift_ok"]]
    if len(failed):
        lines = "; ".join(f"{r.candidate} on {r.runtime}: max |diff| {r.max_abs_diff:.3g} (limit "
                          f"{check.max_abs_diff:g}), agreement {r.agreement:.4f} (limit {check.min_agreement})"
                          for r in failed.itertuples())
        raise DriftError(f"outputs drifted past the tolerance: {lines}. Check the export (opset, dynamic axes) "
                         f"and the runtime's graph optimizations before trusting its speed-up")
    return rows
