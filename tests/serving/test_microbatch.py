"""The event-loop micro-batcher and the lean app: each request gets exactly its own answer back,
concurrent requests share fewer model calls, a late request is shed, and the lean app (on
uvicorn and on granian) answers what the Starlette app around a `Server` answers."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from optlab.serving import http
from optlab.serving.codecs import CODECS, BadRequest
from optlab.serving.lean_app import STAGES, breakdown, lean_app
from optlab.serving.microbatch import MicroBatcher, Shed, for_sla
from optlab.serving.server import Server


class Model:
    """A row-wise model that counts its calls: y = 3x + (x squared), so rows cannot be swapped unnoticed."""

    def __init__(self):
        self.calls, self.sizes = 0, []

    def __call__(self, inputs):
        self.calls += 1
        self.sizes.append(len(inputs["x"]))
        x = inputs["x"]
        return 3.0 * x + x * x


def _requests(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, 4)).astype(np.float32)} for _ in range(n)]


async def _one(batcher: MicroBatcher, features, scheduled_ns=None):
    batcher.enter()
    try:
        return await batcher(features, scheduled_ns)
    finally:
        batcher.leave()


def test_concurrent_requests_get_their_own_answers_from_fewer_calls():
    model, requests = Model(), _requests(40)
    alone = [model(r) for r in requests]
    model.calls, model.sizes = 0, []
    batcher = MicroBatcher(model, max_batch=16, max_wait_ms=5.0)

    async def run():
        return await asyncio.gather(*(_one(batcher, r) for r in requests))

    answers = asyncio.run(run())
    for (output, size, took), expected in zip(answers, alone, strict=True):
        np.testing.assert_allclose(output, expected, rtol=1e-6)
        assert 1 <= size <= 16 and took > 0
    assert model.calls == batcher.calls < len(requests)
    assert max(model.sizes) == 16 and sum(model.sizes) == len(requests)


def test_a_lone_request_is_scored_without_waiting_for_the_timer():
    model = Model()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=500.0)

    async def run():
        start = time.perf_counter()
        await _one(batcher, _requests(1)[0])
        return time.perf_counter() - start

    assert asyncio.run(run()) < 0.4  # the 500 ms wait is for requests that may still join, not for a lone one
    assert model.calls == 1


def test_a_request_past_its_deadline_is_shed_and_a_model_error_reaches_every_request():
    batcher = MicroBatcher(Model(), deadline_ms=5.0)
    late = time.monotonic_ns() - 50_000_000

    async def run(b, scheduled):
        return await asyncio.gather(_one(b, _requests(1)[0], scheduled), _one(b, _requests(1)[0]),
                                    return_exceptions=True)

    shed, served = asyncio.run(run(batcher, late))
    assert isinstance(shed, Shed) and served[1] == 1 and batcher.shed == 1

    def broken(_inputs):
        raise RuntimeError("bad weights")

    errors = asyncio.run(run(MicroBatcher(broken), None))
    assert all(isinstance(e, RuntimeError) for e in errors)


def test_batch_is_sized_from_the_sla_and_bad_settings_are_refused():
    sizing = for_sla(Model(), {"x": np.ones((1, 4), np.float32)}, sla_ms=10.0, largest=64, repeats=3)
    assert sizing.max_batch == 64 and sizing.max_wait_ms == pytest.approx(1.0)
    slow = for_sla(lambda inputs: time.sleep(0.004), {"x": np.ones((1, 4), np.float32)}, sla_ms=10.0, repeats=2)
    assert slow.max_batch == 1  # one call already takes more than a quarter of the SLA
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Model(), max_batch=0)
    with pytest.raises(ValueError, match="sla_ms"):
        for_sla(Model(), {"x": np.ones((1, 4), np.float32)}, sla_ms=0)


def _prepare(message):
    if not isinstance(message, dict) or not isinstance(message.get("x"), list):
        raise BadRequest("send an object with a list 'x' of 4 numbers")
    return {"x": np.asarray([message["x"]], np.float32)}


def _answer(message, reply):
    return {"y": [float(v) for v in np.ravel(reply.output)], "batch": reply.batch_size}


def _lean():
    return lean_app(MicroBatcher(Model(), max_batch=8, max_wait_ms=2.0), {"/score": CODECS["json"]},
                    prepare=_prepare, answer=_answer, name="lean")


def lean_from_spec(spec):
    """The factory a service process calls (`spec["factory"]` names it)."""
    return _lean()


def _bodies(n: int) -> list[bytes]:
    return [json.dumps({"x": [float(v) for v in r["x"][0]]}).encode() for r in _requests(n, seed=3)]


def test_the_lean_app_answers_what_the_starlette_app_answers_and_clocks_its_stages():
    starlette = http.app(Server(Model()), {"/score": CODECS["json"]}, prepare=_prepare, answer=_answer)
    with http.start(starlette, startup_s=30) as slow, http.start(_lean(), startup_s=30) as lean:
        for body in _bodies(5):
            a, b = http.post(slow.port, "/score", body), http.post(lean.port, "/score", body)
            assert a[0] == b[0] == 200
            np.testing.assert_allclose(a[1]["y"], b[1]["y"], rtol=1e-6)
        assert http.post(lean.port, "/score", b'{"x": "no"}') == (422, {"error": "send an object with a list 'x' "
                                                                        "of 4 numbers"})
        assert http.post(lean.port, "/nowhere", b"{}")[0] == 404
        stats = lean.get("/stats")
        assert stats["counts"] == {"ok": 5, "bad_422": 1} and stats["server"]["calls"] == stats["server"]["ok"] == 5
        clocked = stats["stages"]
        assert clocked["count"] == 5 and all(clocked["sums_ns"][s] >= 0 for s in STAGES)
        assert clocked["sums_ns"]["model"] > 0 and slow.get("/stats")["stages"]["count"] == 5
    split = breakdown({"count": 0, "sums_ns": dict.fromkeys(STAGES, 0)}, clocked, client_mean_ms=1.0)
    assert split["requests"] == 5 and split["http_and_socket_us"] == pytest.approx(1000.0 - split["in_app_us"])


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_uvicorn_and_granian_serve_the_same_answers(server):
    spec = {"factory": "tests.serving.test_microbatch:lean_from_spec", "server": server, "processes": 2}
    expected = [Model()({"x": np.asarray([json.loads(b)["x"]], np.float32)})[0].tolist() for b in _bodies(6)]
    with http.start(spec=spec, mode="process", startup_s=60) as service:
        for body, want in zip(_bodies(6), expected, strict=True):
            code, answer = http.post(service.port, "/score", body)
            assert code == 200
            np.testing.assert_allclose(answer["y"], want, rtol=1e-6)
        assert service.get("/health")["deployment"] == "lean"
        stats = service.get("/stats")  # both processes' answers, merged
        assert stats["server"]["ok"] == stats["counts"]["ok"] == stats["stages"]["count"] == 6


def test_stats_of_several_processes_merge_into_one_services():
    merged = http.merge_stats([{"pid": 1, "cpu_s": 1.0, "counts": {"ok": 2}, "service_ms": [1.0], "hit_rate": 0.5},
                               {"pid": 2, "cpu_s": 2.0, "counts": {"ok": 3, "bad_422": 1}, "service_ms": [2.0],
                                "hit_rate": None}])
    assert merged == {"pid": 1, "cpu_s": 3.0, "counts": {"ok": 5, "bad_422": 1}, "service_ms": [1.0, 2.0],
                      "hit_rate": 0.5}
