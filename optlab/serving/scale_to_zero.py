"""Cold start under scale-to-zero: what the first request pays after a fresh start.

A replica scaled to zero starts a process, imports the runtime, loads the artifact and then
answers. `first_request` measures that in fresh processes (optlab.instruments.coldstart) and
puts it beside the steady-state p99 of the same candidate under a light open-loop load.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from optlab.instruments.coldstart import cold_start
from optlab.serving import loadgen
from optlab.serving.policies import NoBatching
from optlab.serving.schedules import Poisson
from optlab.serving.server import Server


def first_request(candidate, requests: Sequence[dict[str, np.ndarray]], *, repeats: int = 3,
                  steady_rate_per_s: float = 200.0, steady_requests: int = 700, seed: int = 0) -> dict[str, Any]:
    """One row: the first answer's latency after a fresh start (median of `repeats` processes) and the
    steady-state p99 at `steady_rate_per_s` (one request at a time), with their ratio."""
    if not getattr(candidate, "loader", None):
        raise ValueError(f"{candidate.name} has no loader, so it cannot be started in a fresh process; build it "
                         "with optlab's techniques or onnx_candidate(), which name one")
    cold = cold_start(candidate.loader, candidate.artifact_path, candidate.loader_options, [requests[0]],
                      repeats=repeats, name=candidate.name, threads=1)
    steady = loadgen.run(Server(candidate, NoBatching()), requests,
                         Poisson(steady_rate_per_s, duration_s=1.2 * steady_requests / steady_rate_per_s),
                         seed=seed).summary
    return {"candidate": candidate.name, "first_request_ms": cold.cold_start_ms,
            "first_request_min_ms": cold.cold_start_min_ms, "first_request_max_ms": cold.cold_start_max_ms,
            "startup_ms": cold.startup_ms, "import_ms": cold.import_ms, "load_ms": cold.load_ms,
            "first_call_ms": cold.first_call_ms, "steady_p99_ms": steady["p99_ms"],
            "steady_rate_per_s": steady_rate_per_s, "cold_over_steady_p99": cold.cold_start_ms / steady["p99_ms"],
            "repeats": repeats}
