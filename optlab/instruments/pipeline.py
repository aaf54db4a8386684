"""Measure before optimizing: time every stage of a whole prediction pipeline, not only the model.

`bid_pipeline(candidate, data)` builds the real-time-bidding path a bidder runs per request:
parse the JSON bid request and encode its features (preprocess), score the click model
(model), price the bid and write the JSON response (postprocess). `profile(stages, requests)`
times each stage per request and returns one tidy row per stage.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from optlab.data.datasets import Batch
from optlab.instruments.timing import summarize

VALUE_PER_CLICK_USD = 2.0  # what a click is worth to the advertiser, for pricing the bid


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Any], Any]


def bid_requests(data, n: int = 200, seed: int = 0) -> list[str]:
    """JSON bid requests, one impression each, rebuilt from the test split's rows
    (the ids are rendered as the strings an exchange would send)."""
    fields = data.meta.get("categorical_fields") or [
        f"field{i}" for i in range(data.test.inputs["categorical"].shape[1])
    ]
    numeric_names = data.meta.get("numeric_fields") or [f"num{i}" for i in range(data.test.inputs["numeric"].shape[1])]
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(data.test), size=min(n, len(data.test)), replace=False)
    cats, nums = data.test.inputs["categorical"][rows], data.test.inputs["numeric"][rows]
    requests = []
    for i, row in enumerate(rows):
        requests.append(json.dumps({
            "id": f"req-{int(row)}",
            "imp": [{"id": "1", **{f: f"{f}-{int(v)}" for f, v in zip(fields, cats[i], strict=False)}}],
            "ext": {n_: float(v) for n_, v in zip(numeric_names, nums[i], strict=False)},
        }))
    return requests


def bid_pipeline(candidate, data) -> list[Stage]:
    """The three stages of answering one bid request with `candidate` as the click model."""
    fields = data.meta.get("categorical_fields") or [
        f"field{i}" for i in range(data.test.inputs["categorical"].shape[1])
    ]
    numeric_names = data.meta.get("numeric_fields") or [f"num{i}" for i in range(data.test.inputs["numeric"].shape[1])]
    cardinalities = data.meta.get("cardinalities") or [int(data.train.inputs["categorical"][:, j].max()) + 1
                                                        for j in range(len(fields))]
    vocab = [{f"{f}-{v}": v for v in range(card)} for f, card in zip(fields, cardinalities, strict=False)]

    def preprocess(request: str) -> tuple[str, float, Batch]:
        message = json.loads(request)
        imp = message["imp"][0]
        categorical = np.array([[vocab[j].get(imp[f], 0) for j, f in enumerate(fields)]], dtype=np.int64)
        numeric = np.array([[message["ext"][n] for n in numeric_names]], dtype=np.float32)
        floor = float(np.exp(message["ext"].get(numeric_names[0], 0.0)))
        return message["id"], floor, {"categorical": categorical, "numeric": numeric}

    def model(state: tuple[str, float, Batch]) -> tuple[str, float, np.ndarray]:
        request_id, floor, batch = state
        return request_id, floor, candidate.predict(batch)

    def postprocess(state: tuple[str, float, np.ndarray]) -> str:
        request_id, floor, logits = state
        p_click = float(1.0 / (1.0 + np.exp(-np.ravel(logits)[0])))
        price = p_click * VALUE_PER_CLICK_USD * 1000.0  # CPM
        bid = {"id": request_id, "seatbid": [{"bid": [{"price": round(price, 4), "ext": {"pctr": p_click}}]}]}
        return json.dumps(bid) if price >= floor else json.dumps({"id": request_id, "nbr": 2})

    return [Stage("preprocess", preprocess), Stage("model", model), Stage("postprocess", postprocess)]


def profile(stages: Sequence[Stage], requests: Sequence[Any], *, repeats: int = 3, warmup: int = 20):
    """Run every request through the stages `repeats` times, timing each stage; one row per
    stage (and a `total` row) with p50/p99 in ms and the stage's share of the mean total."""
    import pandas as pd

    if not requests:
        raise ValueError("profile() needs at least one request")
    for request in list(requests)[:warmup]:
        value = request
        for stage in stages:
            value = stage.fn(value)
    samples = {stage.name: [] for stage in stages}
    totals = []
    clock = time.perf_counter_ns
    for _ in range(repeats):
        for request in requests:
            value, total = request, 0
            for stage in stages:
                start = clock()
                value = stage.fn(value)
                elapsed = clock() - start
                samples[stage.name].append(elapsed)
                total += elapsed
            totals.append(total)
    mean_total = float(np.mean(totals))
    rows = []
    for name, values in [*samples.items(), ("total", totals)]:
        stats = summarize(np.asarray(values, dtype=np.int64), n_boot=200)
        rows.append({"stage": name, "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms, "mean_ms": stats.mean_ms,
                     "share_of_total": float(np.mean(values)) / mean_total, "samples": stats.samples})
    return pd.DataFrame(rows)
