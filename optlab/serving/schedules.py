"""Arrival processes as small frozen dataclasses; `arrivals(load, seed)` turns one into send times.

Open loop (the send times do not depend on the answers): `Poisson` (exponential gaps), `Gamma`
(gamma gaps with a burstiness factor, as `vllm bench serve --burstiness`: 1 is Poisson, below 1
burstier, above 1 more regular), `Burst` (steady, then `peak_factor` x the rate for a while, then
back: the campaign launch) and `Replay` (a recorded file of timestamps). Closed loop: `Closed`
keeps `concurrency` requests outstanding. Every load is bounded by `duration_s` and `max_requests`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

MAX_REQUESTS = 1_000_000


def _check_bounds(rate: float | None, duration_s: float, max_requests: int) -> None:
    if rate is not None and not rate > 0:
        raise ValueError(f"an offered rate must be > 0 requests/s, got {rate!r}")
    if not 0 < duration_s <= 3600:
        raise ValueError(f"duration_s must be in (0, 3600] s so every run ends, got {duration_s!r}")
    if not 1 <= max_requests <= MAX_REQUESTS:
        raise ValueError(f"max_requests must be in [1, {MAX_REQUESTS}], got {max_requests!r}")


@dataclass(frozen=True)
class Poisson:
    rate_per_s: float
    duration_s: float = 10.0
    max_requests: int = MAX_REQUESTS

    def __post_init__(self):
        _check_bounds(self.rate_per_s, self.duration_s, self.max_requests)

    @property
    def offered_per_s(self) -> float:
        return self.rate_per_s

    @property
    def name(self) -> str:
        return f"poisson({self.rate_per_s:g}/s)"


@dataclass(frozen=True)
class Gamma:
    rate_per_s: float
    burstiness: float = 1.0
    duration_s: float = 10.0
    max_requests: int = MAX_REQUESTS

    def __post_init__(self):
        _check_bounds(self.rate_per_s, self.duration_s, self.max_requests)
        if not self.burstiness > 0:
            raise ValueError(f"burstiness must be > 0 (1 = Poisson, < 1 burstier), got {self.burstiness!r}")

    @property
    def offered_per_s(self) -> float:
        return self.rate_per_s

    @property
    def name(self) -> str:
        return f"gamma({self.rate_per_s:g}/s, burstiness={self.burstiness:g})"


@dataclass(frozen=True)
class Burst:
    """Poisson at `rate_per_s` for `steady_s`, at `peak_factor` x for `burst_s`, then back for `after_s`."""

    rate_per_s: float
    peak_factor: float = 3.0
    steady_s: float = 2.0
    burst_s: float = 2.0
    after_s: float = 2.0
    max_requests: int = MAX_REQUESTS

    def __post_init__(self):
        _check_bounds(self.rate_per_s, self.duration_s, self.max_requests)
        if not self.peak_factor >= 1:
            raise ValueError(f"peak_factor must be >= 1 (2-5 is a campaign launch), got {self.peak_factor!r}")

    @property
    def duration_s(self) -> float:
        return self.steady_s + self.burst_s + self.after_s

    @property
    def offered_per_s(self) -> float:
        return self.rate_per_s * (self.steady_s + self.peak_factor * self.burst_s + self.after_s) / self.duration_s

    @property
    def name(self) -> str:
        return f"burst({self.rate_per_s:g}/s x{self.peak_factor:g} for {self.burst_s:g}s)"


@dataclass(frozen=True)
class Replay:
    """Send times from a file: one timestamp in seconds per line (or a .npy array), sorted ascending."""

    path: str
    speed: float = 1.0
    max_requests: int = MAX_REQUESTS

    @property
    def timestamps_s(self) -> np.ndarray:
        return read_trace(self.path) / self.speed

    @property
    def duration_s(self) -> float:
        times = self.timestamps_s
        return float(times[-1]) if len(times) > 1 else 1.0

    @property
    def offered_per_s(self) -> float:
        times = self.timestamps_s
        return len(times) / max(float(times[-1]), 1e-9) if len(times) > 1 else 1.0

    @property
    def name(self) -> str:
        return f"replay({Path(self.path).name}, x{self.speed:g})"


@dataclass(frozen=True)
class Closed:
    """Closed loop: `concurrency` requests outstanding; each answer sends the next one."""

    concurrency: int
    duration_s: float = 10.0
    max_requests: int = MAX_REQUESTS

    def __post_init__(self):
        _check_bounds(None, self.duration_s, self.max_requests)
        if int(self.concurrency) != self.concurrency or self.concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {self.concurrency!r}")

    @property
    def offered_per_s(self) -> float:
        return float("nan")  # set by the server's speed, not by the generator

    @property
    def name(self) -> str:
        return f"closed(concurrency={self.concurrency})"


Load = Poisson | Gamma | Burst | Replay | Closed


def read_trace(path: str | Path) -> np.ndarray:
    """Timestamps (s) from a trace file, shifted to start at 0; refuses an empty or unsorted file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trace file {path} does not exist; write one send time in seconds per line")
    if path.suffix == ".npy":
        times = np.asarray(np.load(path), dtype=np.float64).ravel()
    else:
        text = path.read_text().split()
        try:
            times = np.array([float(t) for t in text], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"trace file {path}: {exc}; write one send time in seconds per line") from None
    if times.size == 0:
        raise ValueError(f"trace file {path} is empty; write one send time in seconds per line")
    bad = np.flatnonzero(np.diff(times) < 0)
    if bad.size:
        raise ValueError(f"trace file {path} is not sorted (line {bad[0] + 2} goes back in time); "
                         f"sort it first, e.g. `sort -g {path.name}`")
    return times - times[0]


def _poisson(load: Poisson, rng: np.random.Generator) -> np.ndarray:
    return _bounded(np.cumsum(rng.exponential(1.0 / load.rate_per_s, _enough(load))), load)


def _gamma(load: Gamma, rng: np.random.Generator) -> np.ndarray:
    gaps = rng.gamma(load.burstiness, 1.0 / (load.rate_per_s * load.burstiness), _enough(load))
    return _bounded(np.cumsum(gaps), load)


def _burst(load: Burst, rng: np.random.Generator) -> np.ndarray:
    parts, start = [], 0.0
    for rate, span in ((load.rate_per_s, load.steady_s), (load.rate_per_s * load.peak_factor, load.burst_s),
                       (load.rate_per_s, load.after_s)):
        if span > 0:
            piece = Poisson(rate, span, load.max_requests)
            parts.append(start + _poisson(piece, rng))
        start += span
    return _bounded(np.concatenate(parts), load)


def _replay(load: Replay, rng: np.random.Generator) -> np.ndarray:
    return load.timestamps_s[:load.max_requests]


def _closed(load: Closed, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(0)  # send times come from the answers


def _enough(load) -> int:
    expected = load.offered_per_s * load.duration_s
    return int(min(load.max_requests, expected * 1.2 + 10 * expected ** 0.5 + 50))


def _bounded(times: np.ndarray, load) -> np.ndarray:
    return times[times < load.duration_s][:load.max_requests]


SCHEDULES: dict[type, Callable[..., np.ndarray]] = {Poisson: _poisson, Gamma: _gamma, Burst: _burst,
                                                    Replay: _replay, Closed: _closed}


def arrivals(load: Load, seed: int = 0) -> np.ndarray:
    """Send times in seconds from the start of the run (sorted; empty for a closed loop)."""
    if type(load) not in SCHEDULES:
        raise TypeError(f"unknown load {load!r}; use one of {', '.join(t.__name__ for t in SCHEDULES)}")
    return SCHEDULES[type(load)](load, np.random.default_rng(seed))
