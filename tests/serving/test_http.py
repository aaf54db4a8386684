"""The serving layer's HTTP app factory, with no case in it: a codec and two hooks make a service;
bad input is a counted 4xx with the hook's message, answers come back in the route's codec, and
the factory's own routes (/constant, /health, /stats) are there."""
from __future__ import annotations

import json
import os

import msgpack
import numpy as np
import pytest

from optlab.serving import http
from optlab.serving.codecs import CODECS, BadRequest
from optlab.serving.server import Server


def _double(inputs):
    return inputs["x"] * 2.0


def _prepare(message):
    if not isinstance(message, dict) or not isinstance(message.get("x"), (int, float)):
        raise BadRequest("send an object with a number 'x'")
    return {"x": np.array([[message["x"]]], np.float32)}


@pytest.fixture(scope="module")
def service():
    application = http.app(Server(_double), {"/double": CODECS["json"], "/double.msgpack": CODECS["msgpack"]},
                           prepare=_prepare, answer=lambda message, reply: {"y": float(np.ravel(reply.output)[0])},
                           name="doubler", stats=lambda: {"extra": 1})
    with http.start(application, startup_s=30) as running:
        yield running


def test_a_codec_and_two_hooks_make_a_service(service):
    assert http.post(service.port, "/double", json.dumps({"x": 2.5}).encode()) == (200, {"y": 5.0})
    code, answer = http.post(service.port, "/double.msgpack", msgpack.packb({"x": 4}), "application/msgpack")
    assert code == 200 and answer == {"y": 8.0}
    assert service.get("/health") == {"ok": True, "deployment": "doubler", "pid": os.getpid()}


def test_bad_input_is_a_counted_4xx_with_the_hooks_message(service):
    code, answer = http.post(service.port, "/double", b'{"x": "two"}')
    assert code == 422 and answer["error"] == "send an object with a number 'x'"
    code, answer = http.post(service.port, "/double", b"{not json")
    assert code == 400 and "not valid JSON" in answer["error"]
    code, _ = http.post(service.port, "/double", json.dumps({"x": 1, "pad": "x" * 20_000}).encode())
    assert code == 413
    stats = service.get("/stats")
    assert stats["counts"]["bad_422"] == 1 and stats["counts"]["bad_400"] == 1 and stats["extra"] == 1
    assert http.post(service.port, "/constant", b"anything")[0] == 200


def test_start_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="mode must be"):
        http.start(None, mode="fork")
    with pytest.raises(ValueError, match="serves an ASGI application"):
        http.start(None)
    with pytest.raises(ValueError, match="factory"):
        http.start(spec={"loader": "x"}, mode="process")
