"""Queueing theory to check measurements against: what a single-server FIFO queue must do.

`lindley_waits` replays arrivals and service times through one server (Lindley's recursion,
W[n+1] = max(0, W[n] + S[n] - A[n+1])); `lindley_services` inverts it: from measured arrivals
and departures, the service time each answer took as one FIFO server sees it (what a capacity
plan feeds its simulator, so that the whole path a client sees counts);
`pollaczek_khinchine_wait` is the M/G/1 mean wait, lambda E[S^2] / (2 (1 - rho)).
The notebook uses them to explain why a fast model still misses its p99 under load; the tests
hold the load generator and the server to them.
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


def lindley_services(arrivals: np.ndarray, departures: np.ndarray) -> np.ndarray:
    """Service times (same unit) that make one FIFO server turn `arrivals` into `departures`:
    in departure order, each answer's departure minus the later of its arrival and the previous
    departure (Lindley's recursion inverted: `lindley_waits(arrivals, s) + s` gives the latencies
    back for a FIFO server). Answers that leave together (members of one batch) get ~0 after the
    first: the batch's time is carried by the first one out."""
    arrivals = np.asarray(arrivals, dtype=np.float64)
    departures = np.asarray(departures, dtype=np.float64)
    if arrivals.shape != departures.shape:
        raise ValueError(f"one departure per arrival: got {arrivals.shape} and {departures.shape}")
    if (departures < arrivals).any():
        raise ValueError("a departure before its arrival: pass each request's arrival and its own departure")
    order = np.argsort(departures, kind="stable")
    a, d = arrivals[order], departures[order]
    previous = np.concatenate(([-np.inf], d[:-1]))
    services = np.empty_like(d)
    services[order] = d - np.maximum(a, previous)
    return services


def pollaczek_khinchine_wait(rate: float, service_mean: float, service_var: float) -> float:
    """Mean wait in an M/G/1 queue (time unit of `service_mean`; `rate` per that unit)."""
    rho = rate * service_mean
    if not 0 <= rho < 1:
        raise ValueError(f"utilisation rate x mean service = {rho:.3g} must be < 1 for a finite wait")
    return rate * (service_var + service_mean ** 2) / (2.0 * (1.0 - rho))
