"""A cascade's latency drawn against both of its models alone: the ECDF of per-request latency
(`optlab.study.cascade.threshold_sweep(...).samples`), where the cascade is bimodal (most requests
pay the cheap model, the escalated ones pay both)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from optlab.study.cascade import CASCADE, CHEAP, EXPENSIVE
from optlab.views.plots import latency_chart

POINTS = 400  # requests drawn per curve


def cascade_samples(samples: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The sweep's samples of both models alone and of the cascade at `threshold` (the one swept
    closest to it), shaped for `latency_chart` (candidate, status, latency_ms)."""
    missing = {"model", "threshold", "latency_ms"} - set(samples.columns)
    if missing:
        raise ValueError(f"cascade samples lack column(s) {', '.join(sorted(missing))}; pass "
                         f"threshold_sweep(...).samples")
    cascades = samples[samples["model"] == CASCADE]
    if cascades.empty:
        raise ValueError("the samples hold no cascade requests; pass threshold_sweep(...).samples")
    swept = np.array(sorted(set(cascades["threshold"].astype(float))))
    nearest = float(swept[np.argmin(np.abs(swept - float(threshold)))])
    picked = samples[samples["model"].isin([CHEAP, EXPENSIVE]) | ((samples["model"] == CASCADE)
                                                                  & (samples["threshold"] == nearest))]
    names = picked["model"].where(picked["model"] != CASCADE, f"cascade, threshold {nearest:.3g}")
    frame = pd.DataFrame({"candidate": names.to_numpy(), "status": "ok", "latency_ms": picked["latency_ms"].to_numpy()})
    return frame.groupby("candidate", sort=False, group_keys=False)[["candidate", "status", "latency_ms"]].apply(
        _thinned).reset_index(drop=True)


def _thinned(group: pd.DataFrame) -> pd.DataFrame:
    """At most POINTS requests per curve, at evenly spaced ranks of the sorted latencies: the same ECDF
    drawn with a chart small enough to embed (thousands of timed requests are not)."""
    ordered = group.sort_values("latency_ms")
    if len(ordered) <= POINTS:
        return ordered
    return ordered.iloc[np.unique(np.round(np.linspace(0, len(ordered) - 1, POINTS)).astype(int))]


def cascade_latency_chart(samples: pd.DataFrame, threshold: float, *, title: str | None = None, width: int = 460):
    """ECDF of per-request latency: the cascade at `threshold` against the cheap and the expensive
    model alone, from the sweep's samples."""
    data = cascade_samples(samples, threshold)
    return latency_chart(data, "ecdf", width=width,
                         title=title or "Per-request latency: the cascade against both models alone")
