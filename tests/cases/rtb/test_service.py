"""The HTTP service on a free loopback port: answers equal the in-process candidate's, bad input is a
counted 4xx (never a 500), a failed start names its port, and the load generator drives it over sockets."""
from __future__ import annotations

import dataclasses
import json
import socket

import msgpack
import numpy as np
import pytest

from optlab.cases.rtb import service as http
from optlab.cases.rtb.deployments import MAX_BODY_BYTES, OPTIMIZED, REASONABLE, BidSchema, Deployment
from optlab.serving import loadgen
from optlab.serving.schedules import Poisson


@pytest.fixture(scope="module")
def candidate(bids_model):
    from optlab.models import zoo

    return zoo.baseline(bids_model)


@pytest.fixture(scope="module")
def deployment(candidate, bids_data):
    return Deployment(REASONABLE, candidate, BidSchema.from_data(bids_data))


@pytest.fixture(scope="module")
def service(deployment):
    with http.start(deployment, startup_s=30) as running:
        yield running


def _expected(candidate, data, rows):
    return candidate.predict({k: v[rows] for k, v in data.test.inputs.items()})


def test_json_and_msgpack_answers_equal_the_in_process_candidate(service, deployment, candidate, bids_data):
    messages, rows = deployment.schema.messages(bids_data.test, 20, seed=3)
    expected = _expected(candidate, bids_data, rows)
    for message, want in zip(messages, expected, strict=True):
        code, answer = http.post(service.port, "/bid", json.dumps(message).encode())
        assert code == 200 and answer["id"] == message["id"]
        code_b, answer_b = http.post(service.port, "/bid.msgpack", msgpack.packb(message), "application/msgpack")
        assert code_b == 200
        np.testing.assert_allclose([answer["logit"], answer_b["logit"]], [want, want], rtol=1e-5, atol=1e-6)
        assert answer["pctr"] == pytest.approx(1 / (1 + np.exp(-want)), rel=1e-5)


def _bad_requests(message):
    imp = message["imp"][0]
    return {
        "missing field": json.dumps({**message, "imp": [{k: v for k, v in imp.items() if k != "creative"}]}),
        "missing ext": json.dumps({k: v for k, v in message.items() if k != "ext"}),
        "wrong type": json.dumps({**message, "ext": {**message["ext"], "frequency": "three"}}),
        "id as number": json.dumps({**message, "imp": [{**imp, "device": 1}]}),
        "unknown publisher": json.dumps({**message, "imp": [{**imp, "publisher": "publisher-99999"}]}),
        "not json": "{'id': 1",
        "not an object": "[1, 2]",
        "oversized": json.dumps({**message, "pad": "x" * MAX_BODY_BYTES}),
    }


def test_bad_input_is_a_counted_4xx_with_a_message(service, deployment, bids_data):
    message = deployment.schema.messages(bids_data.test, 1, seed=5)[0][0]
    before = service.get("/stats")["counts"]
    codes = {}
    for name, body in _bad_requests(message).items():
        code, answer = http.post(service.port, "/bid", body.encode())
        codes[name] = code
        assert 400 <= code < 500, (name, code, answer)
        assert answer["error"] and "\n" not in answer["error"]
    assert codes["unknown publisher"] == 404
    assert codes["oversized"] == 413 and codes["not json"] == 400
    after = service.get("/stats")
    bad = sum(v for k, v in after["counts"].items() if k.startswith("bad_")) - sum(
        v for k, v in before.items() if k.startswith("bad_"))
    assert bad == len(codes)
    assert after["server"]["error"] == 0
    code, _ = http.post(service.port, "/bid", json.dumps(message).encode())  # still serving
    assert code == 200


def test_a_port_in_use_is_reported_with_the_port(deployment):
    holder = socket.socket()
    holder.bind((http.HOST, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(http.ServiceError, match=str(port)):
            http.start(deployment, port=port, startup_s=5)
    finally:
        holder.close()


def test_the_load_generator_drives_it_over_sockets(service, deployment, bids_data):
    bodies = deployment.bodies(bids_data.test, 50)
    target = http.HttpTarget(service.port, "/bid", connections=4)
    result = loadgen.run(target, bodies, Poisson(200, duration_s=1.0), drain_s=3.0)
    s = result.summary
    assert s["requests"] > 100 and s["ok"] == s["requests"], result
    assert target.status_codes[200] == s["ok"]
    ceiling = loadgen.run(http.HttpTarget(service.port, "/constant", connections=4), bodies,
                          Poisson(200, duration_s=0.5), drain_s=3.0).summary
    assert ceiling["ok"] == ceiling["requests"] > 50


def test_a_process_rebuilds_the_candidate_from_its_artifact(candidate, bids_data):
    # no deadline: a fresh process's first (cold) call can push the shedder's estimate over it; this
    # test is about the rebuilt candidate's answers
    deployment = Deployment(dataclasses.replace(OPTIMIZED, deadline_ms=None), candidate, BidSchema.from_data(bids_data))
    messages, rows = deployment.schema.messages(bids_data.test, 5, seed=9)
    with http.start(spec=http.deployment_spec(deployment), mode="process", startup_s=60) as running:
        fresh = running.get("/stats")  # a fresh feature cache has no hit rate yet: null, not an invalid NaN
        assert fresh["feature_cache_hit_rate"] is None and fresh["service_ms"] == [] and fresh["cpu_s"] > 0
        logits = [http.post(running.port, "/bid.msgpack", msgpack.packb(m), "application/msgpack")[1]["logit"]
                  for m in messages]
    np.testing.assert_allclose(logits, _expected(candidate, bids_data, rows), rtol=1e-5, atol=1e-6)
