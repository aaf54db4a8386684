"""The whole-request profile on the bids model: every stage timed, shares add up."""
from __future__ import annotations

import json

import pytest

from optlab.instruments import pipeline
from optlab.models import zoo


def test_profile_times_every_stage_of_a_bid(bids_data, bids_model):
    requests = pipeline.bid_requests(bids_data, n=30)
    assert json.loads(requests[0])["imp"][0]["publisher"].startswith("publisher-")
    stages = pipeline.bid_pipeline(zoo.baseline(bids_model), bids_data)
    response = json.loads(stages[2].fn(stages[1].fn(stages[0].fn(requests[0]))))
    assert response["id"] == json.loads(requests[0])["id"]
    table = pipeline.profile(stages, requests, repeats=2, warmup=5)
    assert table["stage"].tolist() == ["preprocess", "model", "postprocess", "total"]
    assert table.loc[:2, "share_of_total"].sum() == pytest.approx(1.0)
    assert (table["p50_ms"] > 0).all() and (table["samples"] == 60).all()


def test_profile_needs_requests():
    with pytest.raises(ValueError, match="at least one request"):
        pipeline.profile([], [])
