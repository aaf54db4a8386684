"""Serving under load: an in-process server with batching policies, admission control and caches,
an open-loop load generator in its own process, throughput at an SLA, and MLPerf LoadGen as referee.

Modules: `policies` (batching and admission as frozen dataclasses), `server` (queue + workers),
`schedules` (arrival times), `loadgen` (the generator process and its results), `cache` (result and
feature caches), `sla` (throughput at the SLA, configuration search), `referee` (MLPerf LoadGen).
"""
