"""Time several callables interleaved (A B C, B C A, C A B, ...) and compare them round by round.

Timed one after the other, two candidates meet different machines: on a shared laptop a slow
spell of a few seconds (an indexer, a video call) lands on one of them and a 1.3x difference
reads 2.6x or 0.8x. Interleaved in short turns, every round sees the same machine, and the
ratio of two candidates' medians *within* a round cancels what the round's load did to both.
The order rotates each round so that no one always runs first (or right after the slowest).

    run = time_interleaved({"a": a.predict, "b": b.predict}, batches, rounds=8, turn_s=0.05)
    speed_ratio(run, "a", "b")     # (1.32, 1.25, 1.40): a ran 1.32x as fast as b, 95% interval

The interval is a bootstrap over rounds of the geometric mean of the per-round ratios of
median call times, so a round is the unit of evidence (calls within a round are not independent).
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from optlab.instruments.contention import Busy, BusyWindow


@dataclass(frozen=True)
class Interleaved:
    """Per-call samples (ns) of each callable, one array per round, and how busy the machine was."""

    samples_ns: dict[str, list[np.ndarray]]
    busy: Busy
    order: tuple[str, ...]

    @property
    def rounds(self) -> int:
        return min((len(v) for v in self.samples_ns.values()), default=0)

    def round_medians_ms(self, name: str) -> np.ndarray:
        return np.array([float(np.median(s)) / 1e6 for s in self.samples_ns[name]])


def _turn(fn: Callable[[Any], Any], batches: Sequence[Any], start: int, turn_s: float, min_calls: int,
          max_calls: int) -> tuple[np.ndarray, int]:
    """One turn: calls until `turn_s` has passed and at least `min_calls` were made."""
    samples = np.zeros(max_calls, dtype=np.int64)
    count, n = 0, len(batches)
    deadline = time.perf_counter_ns() + int(turn_s * 1e9)
    while count < max_calls and (count < min_calls or time.perf_counter_ns() < deadline):
        batch = batches[(start + count) % n]
        began = time.perf_counter_ns()
        fn(batch)
        samples[count] = time.perf_counter_ns() - began
        count += 1
    return samples[:count], start + count


def time_interleaved(fns: Mapping[str, Callable[[Any], Any]], batches: Sequence[Any], *, rounds: int = 8,
                     turn_s: float = 0.05, min_calls: int = 3, max_calls: int = 10_000,
                     warmup: int = 3) -> Interleaved:
    """Time each of `fns` on `batches` in `rounds` rounds of one turn each (order rotating);
    `warmup` untimed calls of each first. Every callable sees the same batches in the same order."""
    if len(fns) < 2:
        raise ValueError(f"time_interleaved needs at least two callables to compare, got {len(fns)}")
    if not batches:
        raise ValueError("time_interleaved needs at least one batch")
    if rounds < 2 or turn_s <= 0 or min_calls < 1:
        raise ValueError(f"need rounds >= 2, turn_s > 0 and min_calls >= 1; got {rounds}, {turn_s}, {min_calls}")
    names = tuple(fns)
    for name in names:
        for index in range(warmup):
            fns[name](batches[index % len(batches)])
    gc.collect()
    samples: dict[str, list[np.ndarray]] = {name: [] for name in names}
    position = {name: 0 for name in names}
    window = BusyWindow.start()
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            turn, position[name] = _turn(fns[name], batches, position[name], turn_s, min_calls, max_calls)
            samples[name].append(turn)
    return Interleaved(samples, window.stop(), names)


def speed_ratio(run: Interleaved, faster: str, slower: str, *, n_boot: int = 2000,
                seed: int = 0) -> tuple[float, float, float]:
    """How many times as fast `faster` ran as `slower`: (estimate, low, high), a 95% bootstrap
    interval over rounds of the geometric mean of per-round median ratios (> 1: `faster` is faster)."""
    ours, theirs = run.round_medians_ms(faster), run.round_medians_ms(slower)
    usable = (ours > 0) & (theirs > 0)
    logs = np.log(theirs[usable] / ours[usable])
    if len(logs) < 2:
        raise ValueError(f"too few rounds with both {faster!r} and {slower!r} timed to compare them")
    estimate = math.exp(float(logs.mean()))
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, len(logs), size=(n_boot, len(logs)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return estimate, math.exp(float(low)), math.exp(float(high))
