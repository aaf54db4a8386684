"""What one `python -m optlab.bench llm` run shares: its sizes (`Settings`), the SLA, how an engine is
built for it (`make_engine`), and how per-round figures are summarised (median and range)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from optlab.generation.demo import ModelPair, engine_class
from optlab.generation.demo import make_engine as demo_engine
from optlab.instruments.generation import Sla

COMMAND = "python -m optlab.bench llm"
SLA = Sla(ttft_ms=500.0, tpot_ms=50.0)
BLOCK_TOKENS = 16


@dataclass(frozen=True)
class Settings:
    """One run's sizes: full by default, `smoke()` for CI."""

    new_tokens: int = 256  # the KV-cache comparison's generated length
    requests: int = 64
    prompt_tokens: tuple[int, int] = (16, 96)
    output_tokens: tuple[int, int] = (16, 160)
    max_batch: int = 8
    rounds: int = 3
    spec_ks: tuple[int, ...] = (1, 2, 4, 6)
    spec_requests: int = 4
    max_probes: int = 8
    goodput_budget_s: float = 40.0  # per engine per round: no probe starts that cannot end within it

    @classmethod
    def smoke(cls) -> Settings:
        return cls(new_tokens=24, requests=12, prompt_tokens=(4, 16), output_tokens=(4, 16), rounds=1,
                   spec_ks=(2,), spec_requests=2, max_probes=3, goodput_budget_s=30.0)


def spread(values: list[float]) -> dict[str, float | None]:
    """Median and range of per-round figures (None when none was measured)."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    if not kept:
        return {"median": None, "low": None, "high": None}
    return {"median": float(np.median(kept)), "low": float(min(kept)), "high": float(max(kept))}


def ranged(s: dict[str, float | None], spec: str = ".3g", unit: str = "") -> str:
    if s["median"] is None:
        return "not available"
    if s["low"] == s["high"]:
        return f"{s['median']:{spec}}{unit}"
    return f"{s['median']:{spec}}{unit} (range {s['low']:{spec}}-{s['high']:{spec}})"




def median_of(group: pd.DataFrame, column: str) -> float | None:
    values = group[column].dropna() if column in group else []
    return float(np.median(values)) if len(values) else None



def make_engine(name: str, model, draft, settings: Settings, **extra) -> Callable[[], Any] | None:
    if engine_class(name) is None:
        return None
    kwargs: dict[str, Any] = dict(extra)
    if name in ("static", "continuous", "paged", "openvino", "openvino-speculative"):
        kwargs.setdefault("max_batch", settings.max_batch)
    if name.startswith("openvino"):  # OpenVINO's own threads, as many as torch's for every other engine
        import torch

        kwargs.setdefault("threads", torch.get_num_threads())
    pair = ModelPair(model, draft, "")
    return lambda: demo_engine(name, pair, **kwargs)


