"""optlab's instruments against OpenVINO GenAI's own `PerfMetrics`, for the same requests.

GenAI times every request it serves: `PerfMetrics.get_ttft()` from the moment the pipeline takes the
request (`LLMPipeline.generate` called; for continuous batching, the request added) to its first token,
`get_tpot()` the mean gap between its later tokens. optlab times the same tokens from outside, as a
client does (`instruments.generation`): TTFT from the request's *scheduled arrival* to the step that
returned its first token, TPOT (last token - first token) / (tokens - 1).

The two measure the same span only when nothing waits ahead of the pipeline: GenAI's clock starts when
the pipeline takes the request, so a request queued behind others (in optlab's one-at-a-time engine's
queue, or in a batch) has a long optlab TTFT and a short GenAI one, legitimately. So `compare` serves
each request alone, one after another (nothing queued, nothing batched with it), through optlab's
generation server, and compares the per-request means of both. What is left between them is the cost
of observing from outside, and it is reported beside the ratios: GenAI stamps a token when the model's
inference for it ends, before sampling it and handing it to its caller (`lag_ms`: from that stamp to
the engine receiving the first token, measured on the same monotonic clock); then the hand-off to
`step()`, the server loop's admission and its clock read. TPOT is one definition on both sides
((last - first) / (tokens - 1) of the same tokens' times), so only a first token received later than
the others moves it. These costs are constant per request: against a model of a few layers on a
tiny prompt they are a large share of a sub-millisecond TTFT, against a real one a small share.
The bench's target is within 10% (ratio optlab / GenAI in 0.9-1.1).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optlab.generation.server import GenerationServer
from optlab.generation.trace import TraceRequest


@dataclass(frozen=True)
class GenAIFigures:
    """One request as GenAI's `PerfMetrics` timed it: ms to its first token, mean ms per later token (None for
    a one-token answer: undefined), the tokens it generated, and `lag_ms`: from GenAI's own timestamp of the
    first token to the moment the engine received it (GenAI stamps a token when the model's inference ends,
    before sampling and before handing it on; None when the engine did not record when it received it)."""

    ttft_ms: float | None
    tpot_ms: float | None
    tokens: int
    lag_ms: float | None = None


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def figures_from(perf_metrics: Any, received_ms: float | None = None) -> GenAIFigures:
    """`GenAIFigures` of one request's `openvino_genai.PerfMetrics` (its means, in ms); `received_ms` is when the
    engine received the first token, on the monotonic clock in ms (GenAI's `steady_clock` is the same clock)."""
    tokens = int(perf_metrics.get_num_generated_tokens())
    tpot = _finite(perf_metrics.get_tpot().mean) if tokens > 1 else None
    stamps = list(perf_metrics.raw_metrics.m_new_token_times)
    lag = _finite(received_ms - stamps[0]) if received_ms is not None and stamps else None
    return GenAIFigures(_finite(perf_metrics.get_ttft().mean), tpot, tokens, lag)


def monotonic_ms() -> float:
    """Now on the monotonic clock, in ms: the clock GenAI's token timestamps are read on."""
    return time.monotonic_ns() / 1e6


@dataclass(frozen=True)
class MetricsComparison:
    """Both instruments' mean TTFT and TPOT over the same requests, and optlab / GenAI (None when a figure is
    missing). `requests` has one row per request with both sides' figures."""

    requests: pd.DataFrame
    optlab_ttft_ms: float | None
    genai_ttft_ms: float | None
    optlab_tpot_ms: float | None
    genai_tpot_ms: float | None
    lag_ms: float | None = None

    @property
    def ttft_ratio(self) -> float | None:
        return _ratio(self.optlab_ttft_ms, self.genai_ttft_ms)

    @property
    def tpot_ratio(self) -> float | None:
        return _ratio(self.optlab_tpot_ms, self.genai_tpot_ms)

    def row(self) -> dict[str, Any]:
        return {"optlab_ttft_ms": self.optlab_ttft_ms, "genai_ttft_ms": self.genai_ttft_ms,
                "ttft_ratio": self.ttft_ratio, "optlab_tpot_ms": self.optlab_tpot_ms,
                "genai_tpot_ms": self.genai_tpot_ms, "tpot_ratio": self.tpot_ratio, "lag_ms": self.lag_ms,
                "requests": len(self.requests)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _mean(values: pd.Series) -> float | None:
    kept = pd.to_numeric(values, errors="coerce").dropna()
    return float(kept.mean()) if len(kept) else None


def serve_alone(engine: Any, requests: Sequence[TraceRequest]) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Each request served on its own through optlab's generation server, one after another (each arrives once
    the previous has finished: no queue, no batch): optlab's per-request figures and every request's tokens."""
    frames, tokens = [], {}
    for request in requests:
        alone = [TraceRequest(request.request_id, 0.0, request.prompt_ids, request.max_new_tokens)]
        result = GenerationServer(engine, saturation_s=600.0).run(
            alone, n_boot=10, on_token=lambda rid, token, _now: tokens.setdefault(rid, []).append(int(token)))
        frames.append(result.requests)
    return pd.concat(frames, ignore_index=True), tokens


def compare(engine: Any, requests: Sequence[TraceRequest], warmup: int = 1) -> MetricsComparison:
    """optlab's TTFT and TPOT against GenAI's `PerfMetrics` for `requests` served alone by `engine` (one with
    `genai_figures(request_id)`: the engines of `openvino_engine` and `openvino_pipeline`), after `warmup`
    requests (the first `requests` again, under other ids) that neither side counts."""
    if not callable(getattr(engine, "genai_figures", None)):
        raise ValueError(f"{type(engine).__name__} keeps no GenAI PerfMetrics; pass an OpenVINOEngine or "
                         "OpenVINOSingleEngine")
    if not len(requests):
        raise ValueError("compare needs at least one request; draw some with generation.trace")
    warm = [TraceRequest(f"warmup-{i}-{r.request_id}", 0.0, r.prompt_ids, r.max_new_tokens)
            for i, r in enumerate(list(requests)[:warmup])]
    serve_alone(engine, warm)
    frame, _ = serve_alone(engine, requests)
    figures = [engine.genai_figures(rid) for rid in frame["request_id"]]
    frame["genai_ttft_ms"] = [np.nan if f is None or f.ttft_ms is None else f.ttft_ms for f in figures]
    frame["genai_tpot_ms"] = [np.nan if f is None or f.tpot_ms is None else f.tpot_ms for f in figures]
    frame["genai_tokens"] = [0 if f is None else f.tokens for f in figures]
    frame["lag_ms"] = [np.nan if f is None or f.lag_ms is None else f.lag_ms for f in figures]
    ttft = frame[["ttft_ms", "genai_ttft_ms"]].dropna()  # like with like: requests both sides timed
    tpot = frame[["tpot_ms", "genai_tpot_ms"]].dropna()
    return MetricsComparison(frame, _mean(ttft["ttft_ms"]), _mean(ttft["genai_ttft_ms"]), _mean(tpot["tpot_ms"]),
                             _mean(tpot["genai_tpot_ms"]), _mean(frame["lag_ms"]))
