"""Two-stage serving on the zoo's digits student (cheap) and teacher (expensive), smoke settings: every
request is answered exactly once, by the stage its reply names, with that stage's model's outputs."""
from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from optlab.models import zoo
from optlab.models.cascade import confidence
from optlab.serving import loadgen
from optlab.serving.policies import Admission, DynamicBatching, NoBatching
from optlab.serving.schedules import Poisson
from optlab.serving.server import OK, STATUS
from optlab.serving.two_stage import CHEAP, EXPENSIVE, Stage, TwoStage
from optlab.testing.replies import serve_all

ROWS = 160


@pytest.fixture(scope="module")
def models(digits_data, digits_model):
    student = zoo.get("digits", "student", smoke=True, data=digits_data)
    return zoo.baseline(student, name="student"), zoo.baseline(digits_model, name="teacher")


def spans():
    """Each request's test rows: single rows and, every tenth, three (a request partly sent on)."""
    return [slice(i, i + (3 if i % 10 == 0 else 1)) for i in range(ROWS)]


@pytest.fixture(scope="module")
def requests(digits_data):
    pixels = digits_data.test.inputs["pixels"]
    return [{"pixels": pixels[rows]} for rows in spans()]


def serve(server, requests):
    return serve_all(server, requests, timeout_s=20)


def test_every_request_is_answered_once_by_the_stage_its_reply_names(models, requests, digits_data):
    cheap, expensive = models
    pixels = {"pixels": digits_data.test.inputs["pixels"][:ROWS + 2]}
    cheap_all, expensive_all = cheap.predict(pixels), expensive.predict(pixels)
    conf = [confidence(cheap_all[rows], "top1") for rows in spans()]
    threshold = float(np.median(np.concatenate(conf)))  # about half the rows go on
    server = TwoStage(cheap, expensive, threshold=threshold, cheap_stage=Stage(DynamicBatching(8, 1.0)),
                      expensive_stage=Stage(DynamicBatching(8, 1.0)), cores=2)
    replies = serve(server, requests)
    assert sorted(replies) == list(range(ROWS)) and all(len(r) == 1 for r in replies.values())
    stages = Counter()
    for i, [reply] in replies.items():
        assert reply.status == OK
        unsure = conf[i] < threshold
        rows = spans()[i]
        want = np.where(unsure[:, None], expensive_all[rows], cheap_all[rows])
        assert reply.stage == (EXPENSIVE if unsure.any() else CHEAP), i
        np.testing.assert_allclose(reply.output, want, rtol=1e-4, atol=1e-4)  # batched calls: float order only
        stages[reply.stage] += 1
    assert stages[CHEAP] > 10 and stages[EXPENSIVE] > 10
    stats = server.stats()
    assert stats["answered_by_cheap"] == stages[CHEAP] == stats["cheap_ok"]
    assert stats["answered_by_expensive"] == stages[EXPENSIVE] == stats["requests_sent_on"]
    assert server.servers[CHEAP].counts()["ok"] == ROWS  # every request went through the cheap stage once
    assert server.servers[EXPENSIVE].counts()["ok"] == stages[EXPENSIVE]  # and the sent-on ones once more
    assert stats["rows_sent_on"] == sum(int((c < threshold).sum()) for c in conf)


@pytest.mark.parametrize("threshold, stage", [(0.0, CHEAP), (1.0, EXPENSIVE)])
def test_threshold_zero_sends_nothing_on_and_one_everything(models, requests, threshold, stage):
    cheap, expensive = models
    server = TwoStage(cheap, expensive, threshold=threshold, cores=2)
    replies = serve(server, requests[:40])
    assert {r[0].stage for r in replies.values()} == {stage} and all(len(r) == 1 for r in replies.values())
    assert server.servers[EXPENSIVE].counts()["ok"] == (40 if stage == EXPENSIVE else 0)


def test_what_the_expensive_stage_sheds_is_answered_once_by_it(models, requests):
    """A slow expensive stage under a deadline sheds escalated requests: each still gets one reply,
    from the expensive stage, and the cheap stage's answers are unaffected."""
    cheap, expensive = models

    def slow(batch):
        time.sleep(0.3)
        return expensive.predict(batch)
    # a deadline the cheap stage meets even on a busy machine (10 requests), one the expensive stage cannot
    # (0.3 s a call); the estimate neither fades nor lets probes through during the test, so the first
    # escalation is served (nothing learnt yet) and the later ones are shed, whatever the machine's load
    admission = Admission(deadline_ms=200.0, estimate_half_life_s=600.0, shed_half_life=10**6,
                          probe_every_ms=600_000.0)
    server = TwoStage(cheap, slow, threshold=1.0, admission=admission,
                      cheap_stage=Stage(NoBatching()), expensive_stage=Stage(NoBatching()), cores=2)
    replies = serve(server, requests[:10])
    assert all(len(r) == 1 for r in replies.values()) and len(replies) == 10
    by = Counter((r[0].stage, STATUS[r[0].status]) for r in replies.values())
    assert by[EXPENSIVE, "shed_deadline"] > 0 and by[EXPENSIVE, "ok"] > 0
    assert by[CHEAP, "ok"] == 0  # threshold 1: an answer from the cheap stage can only be its own shedding
    stats = server.stats()
    assert {(stage, status): stats[f"{stage}_{status}"] for stage, status in by} == dict(by)


def test_the_core_budget_is_split_explicitly(models):
    cheap, expensive = models
    with pytest.raises(ValueError, match="budget is 2"):
        TwoStage(cheap, expensive, threshold=0.5, cheap_stage=Stage(workers=2), expensive_stage=Stage(), cores=2)
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        Stage(threads_per_worker=0)
    with pytest.raises(ValueError, match="confidence='entropy' is not known"):
        TwoStage(cheap, expensive, threshold=0.5, confidence="entropy", cores=2)


def test_the_load_generator_sees_who_answered(models, requests):
    cheap, expensive = models
    server = TwoStage(cheap, expensive, threshold=0.9, cores=2)
    result = loadgen.run(server, requests, Poisson(200.0, duration_s=0.4), seed=1)
    frame, stats = result.requests, server.stats()
    assert result.summary["ok"] == result.summary["requests"] == len(frame) > 20
    counts = frame["stage"].value_counts()
    assert counts.get(CHEAP, 0) == stats["answered_by_cheap"] and counts.get(EXPENSIVE, 0) == stats[
        "answered_by_expensive"]
    assert counts.sum() == len(frame)
