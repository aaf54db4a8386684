"""The bidding service: a `Deployment` behind the serving layer's HTTP app factory.

Routes (one service, side by side): `POST /bid` with a JSON body and `POST /bid.msgpack` with a
msgpack body: the same bid request, decoded and preprocessed in the handler, scored through the
deployment's `Server` (batching, admission control), answered in the request's own format:
`{"id", "logit", "pctr"}`; plus the app factory's `/constant`, `/health` and `/stats` (which adds
the feature cache's hit rate).

The deployment's `http_app` picks the application: "starlette" (the serving layer's app around the
deployment's `Server`) or "lean" (a raw ASGI app whose event loop batches concurrent requests;
`optlab.serving.lean_app`); `http_server` and `processes` how a service process runs it.

`start(deployment)` serves in a background thread; `start(spec=deployment_spec(deployment),
mode="process")` in its own process (`python -m optlab.serving.http SPEC FD`, which calls this
module's `app_from_spec`: the candidate rebuilt from its `loader`). The client side (`HttpTarget`,
`post`) and the service handle (`Service`, `ServiceError`, `HOST`) are the serving layer's, named
here too so a caller needs one import.
"""
from __future__ import annotations

import collections
import importlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from optlab.cases.rtb.campaign import SLA_MS
from optlab.cases.rtb.deployments import PAYLOADS, BidSchema, Deployment, DeploymentConfig, vectorized_preprocessing
from optlab.models.candidate import Candidate
from optlab.serving import http
from optlab.serving.http import HOST, HttpTarget, Service, ServiceError, post
from optlab.serving.lean_app import lean_app
from optlab.serving.microbatch import MicroBatcher, for_sla
from optlab.serving.server import Reply, available_cores

__all__ = ["HOST", "ROUTES", "HttpTarget", "Service", "ServiceError", "app", "app_from_spec", "deployment_spec",
           "post", "start"]

ROUTES = {"json": "/bid", "msgpack": "/bid.msgpack"}
FACTORY = "optlab.cases.rtb.service:app_from_spec"


def _answer(message: Any, reply: Reply) -> dict[str, Any]:
    logit = float(np.ravel(reply.output)[0])
    identifier = str(message.get("id", "")) if isinstance(message, dict) else ""
    return {"id": identifier, "logit": logit, "pctr": float(1 / (1 + np.exp(-logit)))}


def app(deployment: Deployment, *, keep_samples: int = 4096):
    """The application serving `deployment`: by its `http_app`, the Starlette app around its `Server`
    (which starts and stops with the app) or the lean app around an event-loop `MicroBatcher`
    sized from the SLA (`microbatch.for_sla`).

    `/stats` adds the feature cache's figures, the process's CPU seconds so far (`cpu_s`) and the
    last `keep_samples` per-request service times (`service_ms`: a model call's time shared by the
    requests in it) and their sum since start (`service_ms_total`): what a capacity plan measures at
    its operating point."""
    samples: collections.deque[float] = collections.deque(maxlen=keep_samples)
    total_ms = [0.0]  # every answer's share of its model call, summed: merged over processes by adding

    def answer(message: Any, reply: Reply) -> dict[str, Any]:
        if reply.batch_size > 0:
            share_ms = (reply.done_ns - reply.start_ns) / reply.batch_size / 1e6
            samples.append(share_ms)
            total_ms[0] += share_ms
        return _answer(message, reply)

    def stats() -> dict[str, Any]:
        # a rate of nothing yet (a fresh cache's hit rate) is null: JSON has no nan
        cache = {k: v if not isinstance(v, float) or math.isfinite(v) else None
                 for k, v in deployment.feature_cache_stats().items()}
        return {**cache, "cpu_s": time.process_time(), "service_ms": list(samples), "service_ms_total": total_ms[0]}

    routes = {ROUTES[fmt]: PAYLOADS[fmt] for fmt in ROUTES}
    if deployment.config.http_app == "lean":
        return lean_app(batcher(deployment), routes, prepare=deployment.preprocess, answer=answer,
                        name=deployment.name, stats=stats)
    return http.app(deployment.server(), routes, prepare=deployment.preprocess, answer=answer, name=deployment.name,
                    stats=stats)


def batcher(deployment: Deployment, sla_ms: float = SLA_MS) -> MicroBatcher:
    """The event-loop batcher of a lean deployment: batch and wait sized from the SLA on this
    machine (the model timed on a bid request built from the schema), its deadline the deployment's."""
    schema = deployment.schema
    # through the uncached preprocessing: timing the model must not warm (and count in) the feature cache
    example = vectorized_preprocessing(schema)(schema.message(np.zeros(len(schema.fields), np.int64),
                                                              np.zeros(len(schema.numeric), np.float32)))
    sizing = for_sla(deployment.candidate.predict, example, sla_ms)
    return MicroBatcher(deployment.candidate.predict, max_batch=sizing.max_batch, max_wait_ms=sizing.max_wait_ms,
                        deadline_ms=deployment.config.deadline_ms)


def start(deployment: Deployment | None = None, *, spec: dict | None = None, mode: str = "thread", port: int = 0,
          startup_s: float = 60.0) -> Service:
    """Serve `deployment` in a background thread (`mode="thread"`), or the deployment described by
    `spec` (see `deployment_spec`) in its own process (`mode="process"`), on 127.0.0.1."""
    if mode == "thread" and deployment is None:
        raise ValueError("mode='thread' serves a Deployment: pass deployment=...")
    if mode == "process" and spec is None:
        raise ValueError("mode='process' rebuilds the deployment in the child: pass spec=deployment_spec(...)")
    return http.start(app(deployment) if mode == "thread" else None, spec=spec, mode=mode, port=port,
                      startup_s=startup_s)


def deployment_spec(deployment: Deployment) -> dict:
    """What a child process needs to rebuild `deployment`: the candidate's loader and the config."""
    candidate = deployment.candidate
    if getattr(candidate, "loader", None) is None or getattr(candidate, "artifact_path", None) is None:
        raise ValueError(f"candidate {getattr(candidate, 'name', candidate)!r} has no loader/artifact to rebuild it "
                         "in another process; serve it with mode='thread'")
    return {"factory": FACTORY, "server": deployment.config.http_server,
            "processes": deployment.config.http_processes(available_cores()),
            "loader": candidate.loader, "artifact_path": str(candidate.artifact_path),
            "loader_options": {**candidate.loader_options, "threads": deployment.config.threads_per_worker},
            "name": candidate.name, "config": deployment.config.to_dict(),
            "schema": {"fields": deployment.schema.fields, "cardinalities": deployment.schema.cardinalities,
                       "numeric": deployment.schema.numeric}}


def deployment_from_spec(spec: dict) -> Deployment:
    """The deployment `deployment_spec` describes, its candidate loaded from the artifact."""
    module, _, function = spec["loader"].partition(":")
    predict = getattr(importlib.import_module(module), function)(spec["artifact_path"], **spec["loader_options"])
    candidate = Candidate(spec["name"], predict, artifact_path=Path(spec["artifact_path"]), loader=spec["loader"],
                          loader_options=spec["loader_options"])
    schema = BidSchema(**{k: tuple(v) for k, v in spec["schema"].items()})
    return Deployment(DeploymentConfig(**spec["config"]), candidate, schema)


def app_from_spec(spec: dict):
    """The application a service process runs (`spec["factory"]` names this function)."""
    return app(deployment_from_spec(spec))
