"""A request trace for a generation server: Poisson arrivals at a rate, each request a prompt (token
ids) and an output length.

Lengths and prompts come from a `PromptSource`, a function `(rng, n) -> [(prompt_ids, output_tokens)]`,
so the trace does not care where text comes from: `random_prompts` draws token ids and lengths from
a seeded generator (a stand-in of the right shape); a source over the tokenized test topics can be
swapped in with the same signature. Arrival times come from the serving layer's own Poisson
schedule, so a trace at a rate is the same open-loop load the batch server is offered.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from optlab.serving.schedules import Poisson, arrivals


@dataclass(frozen=True)
class TraceRequest:
    """One request: its id, its scheduled arrival (seconds from the trace's start), prompt and output length."""

    request_id: str
    arrival_s: float
    prompt_ids: tuple[int, ...]
    max_new_tokens: int


@dataclass(frozen=True)
class TraceSpec:
    """How to draw a trace: the offered rate (requests/s), how many requests, the length ranges
    (inclusive) and the vocabulary the random prompts draw from; `seed` fixes everything."""

    rate_per_s: float
    requests: int = 32
    prompt_tokens: tuple[int, int] = (8, 48)
    output_tokens: tuple[int, int] = (8, 48)
    vocab_size: int = 96
    seed: int = 0

    def __post_init__(self):
        if not self.rate_per_s > 0:
            raise ValueError(f"TraceSpec.rate_per_s must be > 0 requests/s, got {self.rate_per_s!r}")
        if self.requests < 1:
            raise ValueError(f"TraceSpec.requests must be >= 1, got {self.requests}")
        for name in ("prompt_tokens", "output_tokens"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"TraceSpec.{name} must be (low, high) with 1 <= low <= high, got {(low, high)}")


PromptSource = Callable[[np.random.Generator, int, TraceSpec], list[tuple[list[int], int]]]


def random_prompts(rng: np.random.Generator, n: int, spec: TraceSpec) -> list[tuple[list[int], int]]:
    """`n` (prompt_ids, output_tokens) pairs: lengths uniform in the spec's ranges, ids uniform in the
    vocabulary (id 0 left out: a model may use it as padding)."""
    prompt_lengths = rng.integers(spec.prompt_tokens[0], spec.prompt_tokens[1] + 1, size=n)
    output_lengths = rng.integers(spec.output_tokens[0], spec.output_tokens[1] + 1, size=n)
    return [(rng.integers(1, spec.vocab_size, size=int(p)).tolist(), int(o))
            for p, o in zip(prompt_lengths, output_lengths, strict=True)]


def poisson_trace(spec: TraceSpec, prompts: PromptSource = random_prompts) -> list[TraceRequest]:
    """`spec.requests` requests with Poisson arrivals at `spec.rate_per_s`, prompts from `prompts`."""
    duration = spec.requests / spec.rate_per_s
    times = arrivals(Poisson(spec.rate_per_s, duration_s=10 * duration + 1.0), spec.seed)[: spec.requests]
    rng = np.random.default_rng(spec.seed + 1)
    drawn = prompts(rng, spec.requests, spec)
    return [TraceRequest(f"r{i}", float(t), tuple(int(x) for x in ids), int(out))
            for i, (t, (ids, out)) in enumerate(zip(times, drawn, strict=True))]


def at_rate(trace: list[TraceRequest], rate_per_s: float, seed: int = 0) -> list[TraceRequest]:
    """The same requests (prompts, lengths, order) re-timed to Poisson arrivals at another rate: probes
    of one search then differ only in load."""
    n = len(trace)
    times = arrivals(Poisson(rate_per_s, duration_s=10 * n / rate_per_s + 1.0), seed)[:n]
    return [TraceRequest(r.request_id, float(t), r.prompt_ids, r.max_new_tokens)
            for r, t in zip(trace, times, strict=True)]
