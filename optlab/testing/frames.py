"""Results frames shaped like `Study.results` (and latency samples), for view tests that need
no model: plots and reports never compute, they only read."""
from __future__ import annotations

import numpy as np
import pandas as pd


def results_frame() -> pd.DataFrame:
    """Rows shaped like Study.results: ok rows, one error row, one reference row."""
    def row(name, family, p99, tput, size, quality, drop, status="ok", **extra):
        return dict(candidate=name, recipe=name, family=family, runtime="torch", device="cpu",
                    p50_ms=p99 * 0.7, p95_ms=p99 * 0.9, p99_ms=p99, throughput_per_s=tput, size_mb=size,
                    peak_rss_mb=250.0, cold_start_ms=800.0, metric="accuracy", quality=quality,
                    quality_drop=drop, quality_drop_ci_low=drop - 0.005, quality_drop_ci_high=drop + 0.005,
                    agreement=1 - drop, cost_per_1k_usd=0.1 / (3.6 * tput), cost_per_1m_usd=100 / (3.6 * tput),
                    status=status, error=None, cpu_model="AMD EPYC", cpu_flags="avx512f avx512_vnni", cores=2,
                    **extra)

    rows = [
        row("baseline", "baseline", 2.8, 4000.0, 1.2, 0.95, 0.0, sparsity=0.0),
        row("ort-int8", "quantization", 1.5, 8000.0, 0.4, 0.94, 0.01),
        row("prune-0.5", "pruning", 2.5, 4500.0, 0.7, 0.93, 0.02, sparsity=0.5),
        row("prune-0.8", "pruning", 2.3, 4700.0, 0.5, 0.85, 0.10, sparsity=0.8),
        dict(candidate="broken-int4", recipe="quantize(inc)", family="quantization", status="error",
             error="UnsupportedRecipe: <b>no INC</b>"),
        row("trt-fp16 [H100]", "compilation", 0.5, 50000.0, 1.0, 0.95, 0.0, status="reference"),
    ]
    return pd.DataFrame(rows)


def latency_samples() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    names = ["baseline", "ort-int8", "broken-int4", "trt-fp16 [H100]"]
    status = ["ok", "ok", "error", "reference"]
    return pd.DataFrame({"candidate": np.repeat(names, 40), "status": np.repeat(status, 40),
                         "latency_ms": rng.gamma(4.0, 0.5, 160)})
