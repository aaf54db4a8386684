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
generation server, and compares the per-request means of both.

Even alone the two clocks time different intervals, and every event is placed on one clock (GenAI's
`steady_clock` is Python's monotonic clock) so the difference is shown piece by piece, never hidden:

    scheduled -before-> handed -submit-> GenAI start -GenAI TTFT-> GenAI stamp -hand-off-> received -after-> delivered

(scheduled: the server's schedule; handed: optlab's engine just before the call that gives GenAI the request;
GenAI start: its first-token stamp minus its TTFT; GenAI stamp: when its inference for the first token ended;
received: optlab's engine has the token; delivered: the server's clock read after the step)

- `optlab_ttft_ms`: scheduled -> delivered, what a client of optlab's server sees (the delivery TTFT);
- `engine_ttft_ms`: handed -> received, on optlab's own stamps: the interval GenAI's TTFT stands for,
  seen from just outside the pipeline (the like-with-like figure: `engine_ratio` is judged);
- `before_ms` (the server's wake-up and admission, and for LLMPipeline the hand-over to its worker
  thread), `submit_ms` (inside GenAI's call before its clock starts), `handoff_ms` (GenAI's stamp to
  optlab receiving the token: sampling, then the handle read or the streamer call) and `after_ms`
  (the engine's return to the server's clock read), so that
  optlab = before + submit + GenAI + hand-off + after, and engine = submit + GenAI + hand-off.
The hand-off differs by engine. Continuous batching's tokens are read from GenAI's request handle on the
server's own thread. `LLMPipeline` gives each token to a streamer through GenAI's own streaming thread
(`ThreadedStreamerWrapper`: a thread started for each `generate`, woken by a condition variable for each
token, which for a Python streamer then takes the GIL), and GenAI's TTFT stops when the first token's
inference ends, before that hop: every client of LLMPipeline gets its first token a thread wake-up later
than GenAI's TTFT says (~0.1 ms with a bare Python streamer on a quiet machine, ~0.5 ms behind optlab's
server, several ms on a busy machine, where the woken thread waits for a core). `lag_ms` shows it.
TPOT is one definition on both sides ((last - first) / (tokens - 1) of the same tokens' times), so only a
first token received later than the others moves it. These costs are constant per request: against a
model of a few layers on a tiny prompt they are a large share of a sub-millisecond TTFT, against a real
one a small share. The bench's target is within 10% on the matching interval (engine / GenAI in 0.9-1.1).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optlab.generation.server import GenerationServer
from optlab.generation.trace import TraceRequest


@dataclass(frozen=True)
class GenAIFigures:
    """One request as GenAI's `PerfMetrics` timed it: ms to its first token, mean ms per later token (None for
    a one-token answer: undefined), the tokens it generated, and the events around them on the monotonic
    clock in ms (None where the engine did not record one): `handed_ms` (optlab's engine just before the call
    that gives GenAI the request), `stamp_ms` (GenAI's own stamp of the first token: when the model's
    inference for it ended, before sampling and handing it on), `received_ms` (optlab's engine has it)."""

    ttft_ms: float | None
    tpot_ms: float | None
    tokens: int
    handed_ms: float | None = None
    stamp_ms: float | None = None
    received_ms: float | None = None

    @property
    def lag_ms(self) -> float | None:
        """The hand-off: GenAI's first-token stamp to optlab's engine receiving the token."""
        return _difference(self.received_ms, self.stamp_ms)

    @property
    def submit_ms(self) -> float | None:
        """From optlab handing the request over to GenAI's clock starting (its stamp minus its TTFT)."""
        start = None if self.stamp_ms is None or self.ttft_ms is None else self.stamp_ms - self.ttft_ms
        return _difference(start, self.handed_ms)

    @property
    def engine_ttft_ms(self) -> float | None:
        """optlab's own stamps around the call: handed -> received (the interval GenAI's TTFT stands for)."""
        return _difference(self.received_ms, self.handed_ms)


def _difference(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def figures_from(perf_metrics: Any, received_ms: float | None = None, handed_ms: float | None = None) -> GenAIFigures:
    """`GenAIFigures` of one request's `openvino_genai.PerfMetrics` (its means, in ms); `handed_ms` and
    `received_ms` are when the engine handed the request over and received its first token, on the monotonic
    clock in ms (GenAI's `steady_clock` is the same clock)."""
    tokens = int(perf_metrics.get_num_generated_tokens())
    tpot = _finite(perf_metrics.get_tpot().mean) if tokens > 1 else None
    stamps = list(perf_metrics.raw_metrics.m_new_token_times)
    stamp = _finite(stamps[0]) if stamps else None
    return GenAIFigures(_finite(perf_metrics.get_ttft().mean), tpot, tokens, handed_ms, stamp, received_ms)


def monotonic_ms() -> float:
    """Now on the monotonic clock, in ms: the clock GenAI's token timestamps are read on."""
    return time.monotonic_ns() / 1e6


LAGS = ("before_ms", "submit_ms", "lag_ms", "after_ms")  # the pieces between the two TTFTs, in time order


@dataclass(frozen=True)
class MetricsComparison:
    """Both instruments' mean TTFT and TPOT over the same requests, optlab's engine-interval TTFT, the lags
    between them (the module's docstring) and the ratios to GenAI's (None when a figure is missing).
    `requests` has one row per request with both sides' figures."""

    requests: pd.DataFrame
    optlab_ttft_ms: float | None
    genai_ttft_ms: float | None
    optlab_tpot_ms: float | None
    genai_tpot_ms: float | None
    engine_ttft_ms: float | None = None
    lags: dict[str, float | None] = field(default_factory=dict)

    @property
    def ttft_ratio(self) -> float | None:
        """Delivery TTFT / GenAI's: the client's view against the engine's (not the same interval)."""
        return _ratio(self.optlab_ttft_ms, self.genai_ttft_ms)

    @property
    def engine_ratio(self) -> float | None:
        """optlab's stamps around GenAI's call / GenAI's TTFT: the same interval seen from each side."""
        return _ratio(self.engine_ttft_ms, self.genai_ttft_ms)

    @property
    def tpot_ratio(self) -> float | None:
        return _ratio(self.optlab_tpot_ms, self.genai_tpot_ms)

    @property
    def lag_ms(self) -> float | None:
        return self.lags.get("lag_ms")

    def row(self) -> dict[str, Any]:
        return {"optlab_ttft_ms": self.optlab_ttft_ms, "engine_ttft_ms": self.engine_ttft_ms,
                "genai_ttft_ms": self.genai_ttft_ms, "ttft_ratio": self.ttft_ratio, "engine_ratio": self.engine_ratio,
                "optlab_tpot_ms": self.optlab_tpot_ms, "genai_tpot_ms": self.genai_tpot_ms,
                "tpot_ratio": self.tpot_ratio, **{name: self.lags.get(name) for name in LAGS},
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
    scheduled = (frame["scheduled_ns"] / 1e6).tolist()  # the server's clock, ms: when each request was due
    delivered = (frame["scheduled_ns"] / 1e6 + frame["ttft_ms"]).tolist()  # and its first-token stamp
    pieces = {"engine_ttft_ms": lambda f, _s, _d: f.engine_ttft_ms,
              "before_ms": lambda f, s, _d: _difference(f.handed_ms, s), "submit_ms": lambda f, _s, _d: f.submit_ms,
              "lag_ms": lambda f, _s, _d: f.lag_ms, "after_ms": lambda f, _s, d: _difference(d, f.received_ms)}
    for name, of in pieces.items():
        values = [None if f is None else of(f, s, d) for f, s, d in zip(figures, scheduled, delivered, strict=True)]
        frame[name] = [np.nan if v is None else v for v in values]
    ttft = frame[["ttft_ms", "genai_ttft_ms"]].dropna()  # like with like: requests both sides timed
    tpot = frame[["tpot_ms", "genai_tpot_ms"]].dropna()
    timed = frame[["engine_ttft_ms", "genai_ttft_ms"]].dropna()
    return MetricsComparison(frame, _mean(ttft["ttft_ms"]), _mean(ttft["genai_ttft_ms"]), _mean(tpot["tpot_ms"]),
                             _mean(tpot["genai_tpot_ms"]), _mean(timed["engine_ttft_ms"]),
                             {name: _mean(frame[name]) for name in LAGS})
