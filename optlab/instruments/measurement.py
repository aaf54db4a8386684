"""What a measurement is: `Workload` (how to measure: batch size, sweep, budgets, what else to
take), `Measurement` (everything measured about one candidate, units in the field names, with
its raw samples and JSON form), `SweepPoint` (one batch size of the throughput sweep) and
`MeasurementError` (a candidate that cannot be measured). The measuring itself is
`optlab.instruments.latency.measure`, which re-exports these names.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from optlab.instruments.coldstart import ColdStart
from optlab.instruments.environment import Environment, physical_cores
from optlab.instruments.timing import LatencyStats


class MeasurementError(ValueError):
    """A candidate cannot be measured (bad inputs, or its predict fails, returns NaN or
    the wrong batch size). The message names the candidate and the problem."""


@dataclass(frozen=True)
class Workload:
    """How to measure. `batch_size=None` times the given requests as they are (their real
    batch mix); an int cuts batches of that many rows from the inputs."""

    batch_size: int | None = 1
    throughput_batch_sizes: tuple[int, ...] = (1, 32, 256)
    threads: int = field(default_factory=physical_cores)
    warmup: int = 10
    min_samples: int = 100
    max_samples: int = 10_000
    budget_s: float = 2.0  # latency loop, after warm-up
    sweep_budget_s: float = 1.0  # each throughput batch size
    rel_ci: float = 0.10  # stop when p99's 95% interval is this narrow; wider is flagged noisy
    cold_start_repeats: int = 5
    memory: bool = True
    cold_start: bool = True
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self):
        def positive_int(name: str, value: Any) -> None:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Workload.{name}={value!r} must be a positive integer")

        if self.batch_size is not None:
            positive_int("batch_size", self.batch_size)
        object.__setattr__(self, "throughput_batch_sizes", tuple(int(b) for b in self.throughput_batch_sizes))
        for size in self.throughput_batch_sizes:
            positive_int("throughput_batch_sizes", size)
        for name in ("threads", "min_samples", "max_samples", "cold_start_repeats", "n_boot"):
            positive_int(name, getattr(self, name))
        if self.warmup < 0:
            raise ValueError(f"Workload.warmup={self.warmup!r} must be >= 0")
        if self.max_samples < self.min_samples:
            raise ValueError(f"Workload.max_samples ({self.max_samples}) must be >= min_samples ({self.min_samples})")
        if self.budget_s <= 0 or self.sweep_budget_s <= 0 or not 0 < self.rel_ci < 1:
            raise ValueError("Workload.budget_s and sweep_budget_s must be > 0 and rel_ci in (0, 1)")

    @classmethod
    def smoke(cls, **overrides: Any) -> "Workload":
        """A tiny setting for CI and notebook smoke runs (cold start taken once)."""
        settings = dict(throughput_batch_sizes=(1, 8), warmup=2, min_samples=10, max_samples=200, budget_s=0.2,
                        sweep_budget_s=0.1, cold_start_repeats=1, n_boot=200)
        return cls(**{**settings, **overrides})

    @classmethod
    def workshop(cls, **overrides: Any) -> "Workload":
        """The walkthroughs' default setting, paced for a workshop (every notebook's Run All within
        three minutes on two cores): 0.75 s per candidate's latency loop, 0.35 s per batch size of
        the sweep (a call over a quarter of that, ~90 ms, is skipped with a note: a small BERT's
        batch of 256), cold start taken once (the row says `cold_start_repeats=1`; its min/max
        are that one run). A recommendation re-times its contenders interleaved before naming a
        winner, so the short loops decide nothing on their own."""
        return cls(**{**dict(budget_s=0.75, sweep_budget_s=0.35, cold_start_repeats=1), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput_batch_sizes": list(self.throughput_batch_sizes)}


@dataclass
class SweepPoint:
    """Per-batch latency and throughput at one batch size."""

    batch_size: int
    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float  # rows per second: batch_size * calls / time spent in calls
    samples_ns: list[int] = field(default_factory=list, repr=False)


@dataclass
class Measurement:
    """Everything measured about one candidate. Units are in the field names."""

    candidate: str
    env: Environment
    complete: bool = True
    stop_reason: str | None = None
    batch_size: int | None = None
    rows_per_call: float | None = None
    threads: int | None = None
    warmup: int = 0
    latency: LatencyStats | None = None
    sweep: list[SweepPoint] = field(default_factory=list)
    size_bytes: int | None = None
    param_count: int | None = None
    zero_fraction: float | None = None
    cold: ColdStart | None = None
    notes: list[str] = field(default_factory=list)
    skipped_batch_sizes: list[int] = field(default_factory=list)  # sweep sizes too costly for the budget
    busy_other_cpu_share: float | None = None  # other processes' share of all cores during the latency loop
    cpu_steal_share: float | None = None
    busy_ray_idle_cpu_share: float | None = None  # idle Ray processes' share, left out of busy_other_cpu_share
    repeat_p50_ratio: float | None = None  # sweep p50 / latency p50 at the same batch size (1.0 = agree)
    cold_start_error: str | None = None  # the fresh process failed: latency stands, these figures are missing
    measured_at: str = ""
    samples_ns: list[int] = field(default_factory=list, repr=False)

    @property
    def throughput(self) -> SweepPoint | None:
        return max(self.sweep, key=lambda point: point.throughput_per_s, default=None)

    def at_batch(self, batch_size: int) -> SweepPoint | None:
        """The sweep's point at `batch_size`, or None when it was not measured (or skipped)."""
        return next((point for point in self.sweep if point.batch_size == batch_size), None)

    def to_row(self) -> dict[str, Any]:
        """One flat dict of scalars (no raw samples) for a tidy DataFrame row."""
        row: dict[str, Any] = {"candidate": self.candidate, "complete": self.complete, "stop_reason": self.stop_reason,
                               "batch_size": self.batch_size, "rows_per_call": self.rows_per_call,
                               "threads": self.threads, "warmup": self.warmup}
        stats = {f.name: (getattr(self.latency, f.name) if self.latency else None) for f in fields(LatencyStats)}
        row.update(stats, samples=stats["samples"] or 0)
        best = self.throughput
        row["throughput_per_s"] = best.throughput_per_s if best else None
        row["throughput_batch_size"] = best.batch_size if best else None
        # The sweep stays long-form: one JSON record per batch size (reshape.batch_sweep expands it).
        row["sweep_json"] = json.dumps([asdict(point) for point in self.sweep])
        row.update(size_bytes=self.size_bytes, size_mb=None if self.size_bytes is None else self.size_bytes / 1e6,
                   param_count=self.param_count, zero_fraction=self.zero_fraction)
        cold = self.cold
        row["peak_rss_mb"] = cold.peak_rss_mb if cold else None
        row["start_rss_mb"] = cold.start_rss_mb if cold else None
        timed = cold is not None and cold.cold_start_ms is not None
        for key in ("cold_start_ms", "cold_start_min_ms", "cold_start_max_ms"):
            row[key] = getattr(cold, key) if timed else None
        for phase in ("startup", "import", "load", "first_call"):
            row[f"cold_start_{phase}_ms"] = getattr(cold, f"{phase}_ms") if timed else None
        row["cold_start_repeats"] = cold.repeats if timed else 0
        row["cold_start_imports_torch"] = cold.imports_torch if cold else None
        row.update(busy_other_cpu_share=self.busy_other_cpu_share, cpu_steal_share=self.cpu_steal_share,
                   busy_ray_idle_cpu_share=self.busy_ray_idle_cpu_share,
                   repeat_p50_ratio=self.repeat_p50_ratio,
                   skipped_batch_sizes=",".join(map(str, self.skipped_batch_sizes)) or None)
        row.update(self.env.to_dict())
        row.update(measured_at=self.measured_at, notes="; ".join(self.notes))
        return row

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(
            env=self.env.to_dict(),
            latency=None if self.latency is None else asdict(self.latency),
            sweep=[asdict(point) for point in self.sweep],
            cold=None if self.cold is None else self.cold.to_dict(),
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Measurement":
        data = dict(data)
        data["env"] = Environment.from_dict(data["env"])
        data["latency"] = None if data.get("latency") is None else LatencyStats(**data["latency"])
        data["sweep"] = [SweepPoint(**point) for point in data.get("sweep", [])]
        data["cold"] = None if data.get("cold") is None else ColdStart.from_dict(data["cold"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Measurement":
        return cls.from_dict(json.loads(text))
