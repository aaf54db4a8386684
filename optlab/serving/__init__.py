"""Serving under load: an in-process server with batching policies, admission control and caches,
an open-loop load generator in its own process, throughput at an SLA, and MLPerf LoadGen as referee.

Modules: `policies` (batching and admission as frozen dataclasses), `server` (queue + workers),
`schedules` (arrival times), `loadgen` (the generator process and its results; `generator_child` is
that process), `queueing` (Lindley and Pollaczek-Khinchine, to check measurements against), `cache`
(result and feature caches, Zipf keys), `sla` (throughput at the SLA, configuration search, serving
figures per candidate), `referee` (MLPerf LoadGen), `scale_to_zero` (the first request after a fresh
start), `workloads` (request payloads from a dataset), `http` (an HTTP app factory around a server,
with the codecs of `codecs` and hooks passed in, a service runner and its client), `capacity`
(capacity planning by simulation, for any day of traffic), `two_stage` (a cheap server that forwards
its unsure requests to an expensive one, the cores split per stage), `cascade_serving` (a cascade
served alone, in one server or two-stage, at the SLA) and `routing` (a front that sends each request
to the route its kind names).

Anything with `start()`, `stop()`, `submit(payload, request_id, scheduled_ns=, on_done=, key=)` and
the `name`, `policy`, `workers`, `threads_per_worker`, `notes` attributes can be driven by
`loadgen.run` in place of a `Server` (an HTTP client target does this).
"""
