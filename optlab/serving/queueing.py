"""Queueing theory to check measurements against: what a single-server FIFO queue must do.

`lindley_waits` replays arrivals and service times through one server (Lindley's recursion,
W[n+1] = max(0, W[n] + S[n] - A[n+1])); `pollaczek_khinchine_wait` is the M/G/1 mean wait,
lambda E[S^2] / (2 (1 - rho)). The notebook uses them to explain why a fast model still misses
its p99 under load; the tests hold the load generator and the server to them.
"""
from __future__ import annotations

import numpy as np


def lindley_waits(arrivals: np.ndarray, service: np.ndarray) -> np.ndarray:
    """Waits in the queue (same unit as the inputs) for FIFO arrivals served one at a time."""
    arrivals = np.asarray(arrivals, dtype=np.float64)
    service = np.asarray(service, dtype=np.float64)
    if arrivals.shape != service.shape:
        raise ValueError(f"one service time per arrival: got {arrivals.shape} and {service.shape}")
    waits = np.zeros_like(arrivals)
    free_at = -np.inf
    for i, (arrival, cost) in enumerate(zip(arrivals, service, strict=True)):
        start = max(arrival, free_at)
        waits[i] = start - arrival
        free_at = start + cost
    return waits


def pollaczek_khinchine_wait(rate: float, service_mean: float, service_var: float) -> float:
    """Mean wait in an M/G/1 queue (time unit of `service_mean`; `rate` per that unit)."""
    rho = rate * service_mean
    if not 0 <= rho < 1:
        raise ValueError(f"utilisation rate x mean service = {rho:.3g} must be < 1 for a finite wait")
    return rate * (service_var + service_mean ** 2) / (2.0 * (1.0 - rho))
