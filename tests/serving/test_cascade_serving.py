"""The cascade served three ways at one rate, on the zoo's digits student and teacher (smoke): every
deployment answers every request, and the two-stage server says which stage answered how many."""
from __future__ import annotations

import pytest

from optlab.models import zoo
from optlab.models.cascade import CascadeCandidate, Router
from optlab.serving.cascade_serving import EXPENSIVE_ALONE, ONE_SERVER, TWO_STAGE, Split, at_rate
from optlab.serving.workloads import single_rows


@pytest.fixture(scope="module")
def cascade(digits_data, digits_model):
    cheap = zoo.baseline(zoo.get("digits", "student", smoke=True, data=digits_data), name="student")
    expensive = zoo.baseline(digits_model, name="teacher")
    router = Router(cheap.predict_fn, expensive.predict_fn, "top1", 0.9)
    return CascadeCandidate(name="cascade", predict_fn=router, family="cascade", runtime="torch", device="cpu",
                            parts=(cheap, expensive))


def test_every_deployment_answers_every_request_and_the_stages_add_up(cascade, digits_data):
    table = at_rate(cascade, single_rows(digits_data, n=200), Split.even(cores=2), 150.0, duration_s=0.4)
    assert list(table["deployment"]) == [EXPENSIVE_ALONE, ONE_SERVER, TWO_STAGE]
    assert (table["ok"] == table["requests"]).all() and (table["requests"] > 20).all()
    two = table.set_index("deployment").loc[TWO_STAGE]
    assert two["cheap_answered"] + two["expensive_answered"] == two["requests"]
    assert 0 < two["sent_on_share"] < 1 and two["expensive_answered"] > 0
    assert table["p99_sure_ms"].notna().all() and table["p99_unsure_ms"].notna().all()


def test_a_split_that_leaves_a_stage_without_a_worker_is_refused():
    with pytest.raises(ValueError, match="needs >= 2 cores"):
        Split.even(cores=1)
    with pytest.raises(ValueError, match=">= 1 worker per stage within 2 cores"):
        Split(2, 2, 1)
