"""Routing by request kind on real models: the intents classifier of the zoo (smoke) and a tiny Llama with a
BPE tokenizer trained on the intents texts. Every request goes to the route its kind names and is
answered once, by that route; both deployments of the agency's case run under the load generator."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from optlab.generation.label_scoring import LabelScorer
from optlab.generation.mixed import CLASSIFY, GENERATE, MixSpec, mixed_trace, one_model, routed
from optlab.models import language, zoo
from optlab.serving import loadgen
from optlab.serving.routing import FRONT, KindRouter, MixedRequest, Route
from optlab.serving.schedules import Poisson
from optlab.serving.server import ERROR, OK
from optlab.testing.replies import serve_all

TINY = language.LMSpec("tiny", layers=1, hidden=32, heads=2, kv_heads=2, intermediate=64, max_positions=256)


@pytest.fixture(scope="module")
def parts(intents_data, intents_model):
    tokenizer = language.tokenizer_from_json(language.train_tokenizer(
        " ".join(map(str, intents_data.meta["texts"]["train"][:400])), vocab_size=300))
    lm = language.build(TINY, tokenizer, seed=0).eval()
    labels = [name.replace("_", " ") for name in intents_data.meta["classes"]]
    scorer = LabelScorer(lm, tokenizer, labels, prompt_tokens=16)
    trace = mixed_trace(intents_data, scorer, MixSpec(requests=60, classify_share=0.7, prompt_tokens=(4, 8),
                                                      output_tokens=(2, 4)))
    return lm, scorer, zoo.baseline(intents_model, name="intents"), trace


def serve(router, trace):
    return serve_all(router, trace, timeout_s=30)


@pytest.mark.parametrize("which", ["routed", "one LM"])
def test_every_request_goes_to_the_route_its_kind_names_and_is_answered_once(parts, which):
    lm, scorer, classifier, trace = parts
    deployment = routed(lm, classifier) if which == "routed" else one_model(lm, scorer)
    replies = serve(deployment.router, trace)
    assert sorted(replies) == list(range(len(trace))) and all(len(r) == 1 for r in replies.values())
    kinds = Counter(request.kind for request in trace)
    assert kinds[CLASSIFY] > 20 and kinds[GENERATE] > 5
    for i, [reply] in replies.items():
        request = trace[i]
        assert reply.status == OK and reply.stage == request.kind, (i, reply)
        if request.kind == CLASSIFY:  # the answer is the route's own model's, on this request's payload
            model = classifier.predict if which == "routed" else scorer.predict
            form = "classifier" if which == "routed" else "lm"
            np.testing.assert_allclose(reply.output, model(request.payloads[form]), rtol=1e-3, atol=1e-3)
        else:
            assert reply.tokens == request.payloads["generation"].max_new_tokens
    stats = deployment.router.stats()
    assert stats["classify_ok"] == kinds[CLASSIFY] and stats["generate_ok"] == kinds[GENERATE]
    assert all(clock.busy_ns > 0 for clock in deployment.clocks.values())


def test_the_lm_scores_every_label_and_reads_only_each_rows_own_text(parts):
    _, scorer, _, trace = parts
    texts = [r.payloads["lm"] for r in trace if r.kind == CLASSIFY][:3]
    alone = np.concatenate([scorer.predict(t) for t in texts])
    width = max(t["lm_ids"].shape[1] for t in texts)
    batch = {"lm_ids": np.concatenate([np.pad(t["lm_ids"], ((0, 0), (0, width - t["lm_ids"].shape[1])))
                                       for t in texts]),
             "lm_length": np.concatenate([t["lm_length"] for t in texts])}
    assert alone.shape == (3, len(scorer.labels)) and np.all(alone < 0)  # log-probabilities
    np.testing.assert_allclose(scorer.predict(batch), alone, rtol=1e-4, atol=1e-4)  # padding changes nothing


def test_a_kind_without_a_route_is_answered_once_by_the_front(parts):
    lm, _, classifier, trace = parts
    router = routed(lm, classifier).router
    odd = MixedRequest("translate", {"lm": trace[0].payloads.get("lm")})
    missing = MixedRequest(CLASSIFY, {"generation": None})
    replies = serve(router, [odd, missing])
    assert [replies[i][0].stage for i in (0, 1)] == [FRONT, FRONT]
    assert all(r[0].status == ERROR for r in replies.values())
    assert "no route for kind 'translate'" in replies[0][0].error
    assert "reads payload 'classifier'" in replies[1][0].error
    with pytest.raises(TypeError, match="must be a Route"):
        KindRouter({CLASSIFY: Route(object(), "lm")})


def test_the_load_generator_keeps_each_requests_route(parts):
    lm, _, classifier, trace = parts
    result = loadgen.run(routed(lm, classifier).router, trace, Poisson(40.0, duration_s=0.6), seed=2,
                         keys=np.arange(200))
    frame = result.requests
    assert result.summary["ok"] == len(frame) > 5
    want = [trace[int(k) % len(trace)].kind for k in frame["key"]]
    assert list(frame["stage"]) == want
