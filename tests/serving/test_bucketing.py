"""Length-bucketed batching on a tiny real BERT: served per bucket, each request gets the logits
it gets served alone; a batch never mixes buckets and is cut to its own longest row (or to the
bucket edge); the oldest request goes first, so a lone request in a rare bucket leaves after its
max wait; admission control still sheds; an ONNX graph with a fixed sequence length and bad
configurations are refused with one-line errors. The worker is held inside its first model call
while the queue fills, so batch composition is decided by the queue alone (no timing)."""
from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from optlab.models.architectures import BertClassifier
from optlab.models.candidate import Candidate, OnnxModel
from optlab.models.zoo import baseline
from optlab.serving.bucketing import request_length
from optlab.serving.policies import Admission, BucketedBatching, DynamicBatching, NoBatching, parse_policy
from optlab.serving.server import ERROR, OK, SHED_QUEUE_FULL, Server

MAX_LENGTH, VOCAB = 64, 200
EDGES = (8, 16, 32)


@pytest.fixture(scope="module")
def bert():
    """A 2-layer, 32-wide BERT (random weights: the outputs only have to agree) as a PyTorch Candidate."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertClassifier(vocab_size=VOCAB, num_classes=5, layers=2, hidden=32, heads=2, intermediate=64,
                               max_length=MAX_LENGTH, dropout=0.0)
    return baseline(model.eval(), name="tiny-bert")


def make_request(request_id: int, length: int, rows: int, rng) -> dict[str, np.ndarray]:
    """`rows` texts, the longest `length` tokens, padded to MAX_LENGTH as a tokenizer with
    padding="max_length" sends them; token 1 of every row carries the request id."""
    lengths = [length] + list(rng.integers(3, length + 1, rows - 1))
    ids = np.zeros((rows, MAX_LENGTH), dtype=np.int64)
    mask = np.zeros((rows, MAX_LENGTH), dtype=np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(10, VOCAB, n)
        ids[row, 0], ids[row, 1] = 2, 5 + request_id  # [CLS], the marker
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def long_tailed(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.geometric(1 / 9, n) + 2, 3, MAX_LENGTH)  # mostly short, a few long
    lengths[:3] = (MAX_LENGTH, 40, 5)  # the overflow bucket and a rare one are never empty
    return [make_request(i, int(length), 1 + i % 3, rng) for i, length in enumerate(lengths)]


class Recorder:
    """The candidate, recording every model call; its first call waits for `release`."""

    def __init__(self, candidate):
        self.candidate, self.calls = candidate, []
        self.entered, self.release = threading.Event(), threading.Event()

    def predict(self, batch):
        self.calls.append({k: v.copy() for k, v in batch.items()})
        self.entered.set()
        self.release.wait(30)
        return self.candidate.predict(batch)


def serve(model, policy, requests, **server):
    """Submit every request while the worker is held in its first call; the replies by request id."""
    replies, lock = {}, threading.Lock()

    def on_done(reply):
        with lock:
            replies[reply.request_id] = reply
    with Server(model, policy, **server) as running:
        running.submit(requests[0], 0, on_done=on_done)
        if isinstance(model, Recorder):
            assert model.entered.wait(30), "the worker never called the model"
        for i, payload in enumerate(requests[1:], start=1):
            running.submit(payload, i, on_done=on_done)
        if isinstance(model, Recorder):
            model.release.set()
        deadline = time.monotonic() + 60
        while len(replies) < len(requests) and time.monotonic() < deadline:
            time.sleep(0.005)
    assert len(replies) == len(requests)
    return replies


def call_requests(call) -> list[int]:
    return sorted({int(i) - 5 for i in call["input_ids"][:, 1]})


@pytest.mark.parametrize("pad_to", ["longest", "edge"])
def test_bucketed_serving_matches_unbatched_and_never_mixes_buckets(bert, pad_to):
    requests = long_tailed(40)
    lengths = [request_length(r, "attention_mask") for r in requests]
    policy = BucketedBatching(max_batch=4, max_wait_ms=5.0, edges=EDGES, pad_to=pad_to)
    alone = serve(bert, NoBatching(), requests)
    recorder = Recorder(bert)
    bucketed = serve(recorder, policy, requests)
    for i, request in enumerate(requests):
        assert alone[i].status == bucketed[i].status == OK
        assert bucketed[i].output.shape == (len(request["input_ids"]), 5)
        np.testing.assert_allclose(bucketed[i].output, alone[i].output, rtol=1e-4, atol=1e-5)
    assert max(r.batch_size for r in bucketed.values()) == 4  # batches did form
    seen = []
    for call in recorder.calls:
        ids = call_requests(call)
        buckets = {policy.bucket(lengths[i]) for i in ids}
        assert len(buckets) == 1, f"a batch mixed buckets {buckets}"
        (bucket,) = buckets
        longest = max(lengths[i] for i in ids)
        expected = EDGES[bucket] if pad_to == "edge" and bucket < len(EDGES) else longest
        assert call["input_ids"].shape[1] == call["attention_mask"].shape[1] == expected
        assert expected < MAX_LENGTH or bucket == len(EDGES)  # a short request never pays for a long one
        seen += ids
    assert sorted(seen) == list(range(40))
    assert {policy.bucket(n) for n in lengths} == set(range(len(EDGES) + 1))  # every bucket was exercised


def test_the_oldest_request_goes_first_so_a_rare_bucket_does_not_wait_for_company(bert):
    rng = np.random.default_rng(1)
    # request 1 (30 tokens, alone in its bucket) queues first, behind the call under way, then 12 short ones
    requests = [make_request(i, 30 if i == 1 else 6, 1, rng) for i in range(14)]
    recorder = Recorder(bert)
    replies = serve(recorder, BucketedBatching(max_batch=4, max_wait_ms=5.0, edges=EDGES), requests)
    order = [call_requests(call) for call in recorder.calls]
    assert order[1] == [1]  # alone, before three full batches of short requests
    assert [len(ids) for ids in order] == [1, 1, 4, 4, 4]
    assert replies[1].batch_size == 1 and replies[1].status == OK


def test_a_lone_request_leaves_once_its_max_wait_is_over(bert):
    policy = BucketedBatching(max_batch=8, max_wait_ms=30.0, edges=EDGES)
    replies, done = [], threading.Event()

    def on_done(reply):
        replies.append(reply)
        done.set()
    with Server(bert, policy) as server:
        sent = time.monotonic_ns()
        server.submit(make_request(0, 12, 2, np.random.default_rng(2)), 0, on_done=on_done)
        assert done.wait(30), "a lone request was never answered while the server ran"
    (reply,) = replies
    assert reply.status == OK and reply.batch_size == 1
    assert reply.start_ns >= sent + 30_000_000  # it waited for company for max_wait_ms, not less


def test_admission_control_still_sheds_a_full_queue(bert):
    requests = long_tailed(6, seed=3)
    replies = serve(Recorder(bert), BucketedBatching(max_batch=4, max_wait_ms=1.0, edges=EDGES), requests,
                    admission=Admission(queue_limit=2))
    statuses = [replies[i].status for i in range(6)]
    assert statuses == [OK, OK, OK, SHED_QUEUE_FULL, SHED_QUEUE_FULL, SHED_QUEUE_FULL]


def tiny_onnx(path, sequence) -> Candidate:
    """A real ONNX graph summing the token ids per row, its sequence axis fixed (an int) or dynamic (a name)."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", sequence])
              for n in ("input_ids", "attention_mask")]
    output = helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph([helper.make_node("ReduceSum", ["input_ids", "axes"], ["logits"], keepdims=1)],
                              "tiny", inputs, [output], [axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return Candidate(name=f"tiny-onnx-{sequence}", runtime="onnxruntime", model=OnnxModel(path, ("input_ids",
                     "attention_mask"), ("logits",)), artifact_path=path,
                     predict_fn=lambda batch: session.run(None, {k: batch[k] for k in ("input_ids",
                                                                                        "attention_mask")})[0])


def test_an_onnx_graph_with_a_fixed_sequence_length_is_refused_in_one_line(tmp_path):
    fixed = tiny_onnx(tmp_path / "fixed.onnx", MAX_LENGTH)
    with pytest.raises(ValueError, match=r"fixed sequence length \(input_ids: \[batch, 64\]\).*dynamic_axes") as err:
        Server(fixed, BucketedBatching(edges=EDGES))
    assert "\n" not in str(err.value) and "DynamicBatching" in str(err.value)
    Server(fixed, DynamicBatching())  # without trimming, a fixed length is fine
    dynamic = tiny_onnx(tmp_path / "dynamic.onnx", "sequence")
    requests = long_tailed(12, seed=4)
    replies = serve(Recorder(dynamic), BucketedBatching(max_batch=4, max_wait_ms=1.0, edges=EDGES), requests)
    for i, request in enumerate(requests):  # trimming only drops zeros: the sums are exact
        np.testing.assert_array_equal(replies[i].output, request["input_ids"].sum(axis=1, keepdims=True))


def test_bad_configuration_and_requests_without_lengths_get_clear_errors(bert):
    policy = parse_policy("bucketed:32:2.0:16,32,64,128")
    assert policy == BucketedBatching(max_batch=32, max_wait_ms=2.0, edges=(16, 32, 64, 128))
    assert parse_policy(policy.name) == policy
    assert parse_policy("bucketed(max_batch=8, edges=8,16, pad_to=edge)") == BucketedBatching(8, edges=(8, 16),
                                                                                             pad_to="edge")
    for text, message in (("bucketed:32:2:64,16", "increase strictly"), ("bucketed:32:2:a,b", "not integers"),
                          ("bucketed:0:2", "integer >= 1"), ("bucketed:8:-1", "must be >= 0"),
                          ("bucketed(pad_to=left)", "choose one of longest, edge"),
                          ("bucketed(edge=8)", "no parameter 'edge'"), ("bucketed:1:2:3:longest:m:x", "at most 5"),
                          ("buckets:8", "unknown batching policy")):
        with pytest.raises(ValueError, match=message):
            parse_policy(text)
    with pytest.raises(ValueError, match="edges must be integers >= 1"):
        BucketedBatching(edges=())
    replies = serve(bert, BucketedBatching(edges=EDGES), [{"input_ids": np.ones((1, 5), dtype=np.int64)}])
    assert replies[0].status == ERROR and "length from 'attention_mask'" in replies[0].error
    assert "length_key" in replies[0].error
