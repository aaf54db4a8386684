"""Memory and size budgets in the recommendation: a candidate over a budget is never recommended, a
budget whose figure was not measured is not assumed met, and a bad budget is refused in one line."""
import math

import pytest

from optlab.study.frontier import recommend, sla_constraints, vega_outside
from optlab.testing.frames import results_frame


def _frame():
    df = results_frame()
    df.loc[df["candidate"] == "ort-int8", "peak_rss_mb"] = 900.0  # the cheapest, but a memory hog
    return df


def test_without_budgets_the_cheapest_wins():
    assert recommend(_frame(), max_quality_drop=0.05).candidate == "ort-int8"


def test_a_candidate_over_the_memory_budget_is_never_recommended():
    rec = recommend(_frame(), max_quality_drop=0.05, max_memory_mb=500)
    assert rec.met and rec.candidate != "ort-int8"
    reasons = {r.candidate: r.reasons for r in rec.rejected}
    assert any("peak memory 900 MB > 500 MB" in reason for reason in reasons["ort-int8"])
    assert "peak memory <= 500 MB" in rec.explanation


def test_a_candidate_over_the_size_budget_is_never_recommended():
    df = _frame()
    rec = recommend(df, max_quality_drop=0.05, max_size_mb=0.6)
    over = set(df.loc[df["size_mb"] > 0.6, "candidate"])
    assert rec.met and rec.candidate not in over and rec.candidate == "ort-int8"
    rec = recommend(df, max_size_mb=0.3)
    assert not rec.met and rec.row is None and "size on disk <= 0.3 MB" in rec.explanation


def test_an_unmeasured_figure_does_not_meet_a_budget():
    df = _frame()
    df.loc[df["candidate"] == "ort-int8", "peak_rss_mb"] = math.nan
    rec = recommend(df, max_quality_drop=0.05, max_memory_mb=1000)
    assert rec.candidate != "ort-int8"
    assert any("peak memory not measured" in r for x in rec.rejected if x.candidate == "ort-int8" for r in x.reasons)


@pytest.mark.parametrize("keyword, value", [("max_memory_mb", -1), ("max_size_mb", 0), ("max_memory_mb", "big"),
                                            ("max_size_mb", math.inf)])
def test_a_bad_budget_is_refused_in_one_line_naming_the_fix(keyword, value):
    with pytest.raises(ValueError) as error:
        recommend(_frame(), **{keyword: value})
    message = str(error.value)
    assert keyword in message and "\n" not in message


def test_the_chart_rule_and_the_sentence_read_the_same_budget():
    rule = vega_outside(sla_constraints(max_memory_mb=500, max_size_mb=1.0), param=False)
    assert "datum.peak_rss_mb > 500.0" in rule and "datum.size_mb > 1.0" in rule
