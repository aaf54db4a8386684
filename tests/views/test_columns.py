"""optlab.study.columns: every column a view shows (plots, report, explorer details, the CLI
table) is declared exactly once, and every view labels, formats and ranks it from there."""
import math

import numpy as np
import pandas as pd
import pytest

from optlab.study import columns, frontier
from optlab.testing import results_frame
from optlab.views import plots, report, widgets


def _entries(name: str) -> int:
    """How many COLUMNS entries declare `name` (an interval column counts through its figure)."""
    own = sum(c.name == name for c in columns.COLUMNS)
    through = sum(name in (c.ci or ()) for c in columns.COLUMNS)
    return own + through


def _encoded_fields(spec) -> set[str]:
    """Every field a chart's encodings (tooltips included) name."""
    found = set()
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "field" and isinstance(value, str):
                found.add(value)
            found |= _encoded_fields(value)
    elif isinstance(spec, list):
        for value in spec:
            found |= _encoded_fields(value)
    return found


SHOWN = {
    "plots tooltips": plots.TOOLTIP_COLUMNS,
    "report headline": report.HEADLINE_COLUMNS,
    "report full table": report.FULL_EXTRA_COLUMNS,
    "explorer details": widgets.DETAILS,
}


@pytest.mark.parametrize("view", list(SHOWN))
def test_every_shown_column_has_exactly_one_entry(view):
    for name in SHOWN[view]:
        assert _entries(name) == 1, f"{view} shows {name!r}, declared {_entries(name)} times in COLUMNS"


def test_every_field_a_chart_draws_has_one_entry():
    helpers = set(plots.CHART_FIELDS)
    df = results_frame()
    charts = [plots.pareto_chart(df, max_p99_ms=2.6, max_quality_drop=0.03, recommended="ort-int8"),
              plots.pareto_chart(df, x="throughput_per_s"), plots.size_chart(df)]
    for chart in charts:
        for field in _encoded_fields(chart.to_dict()) - helpers:
            assert _entries(field) == 1, f"a chart draws {field!r}, declared {_entries(field)} times"


def test_the_cli_table_reads_headers_and_formats_from_the_table():
    text = report.console_table(results_frame())
    header = text.splitlines()[0]
    for name in ("p99_ms", "throughput_per_s", "quality_drop", "cost_per_1m_usd"):
        assert columns.column(name).header in header
    assert "+0.0100" in text  # quality_drop's Python format
    assert "broken-int4" not in text  # error rows are named separately, not in the table


def test_no_inf_or_nan_reaches_the_table():
    df = results_frame()
    df.loc[0, "throughput_per_s"] = math.inf
    df.loc[1, "p99_ms"] = math.nan
    text = report.console_table(df)
    assert "inf" not in text.lower() and "nan" not in text.lower()
    assert report.headline_table(df)["throughput_per_s"].isna().iloc[0]
    assert "not available" in text  # the gaps say so in words, by the one rule of study.columns


def test_one_rule_for_a_figure_a_person_cannot_read():
    p99 = columns.column("p99_ms")
    assert p99.render(1.5) == "1.500" and p99.render(None) == columns.NOT_MEASURED
    assert p99.render(math.nan, columns.NOT_AVAILABLE) == columns.NOT_AVAILABLE
    assert p99.render(math.inf) == p99.render(-math.inf) == columns.NOT_AVAILABLE
    assert p99.render(math.inf, reason="no rate met the SLA") == "not available (no rate met the SLA)"
    assert columns.column("error").render(None) == ""  # a missing word is blank, not a figure not measured
    assert columns.not_available(pd.NA) == columns.NOT_MEASURED and columns.not_available(np.float32("inf"))
    assert columns.not_available(0.0) is None and columns.not_available("x") is None
    assert columns.not_available(False) is None


def test_directions_come_from_one_place():
    assert columns.higher_is_better("throughput_per_s") and columns.higher_is_better("agreement")
    assert not columns.higher_is_better("p99_ms") and not columns.higher_is_better("quality_drop")
    assert set(frontier.HIGHER_IS_BETTER) == set(columns.higher_is_better_names())
    assert plots.lower_is_better("p99_ms") and not plots.lower_is_better("throughput_at_sla_per_s")


def test_quality_direction_follows_its_metric():
    assert columns.column("quality").higher_is_better == columns.PER_METRIC
    assert columns.higher_is_better("quality", "accuracy")


def test_a_metric_direction_is_declared_once_in_instruments_metrics():
    from optlab.instruments import metrics

    for metric, up in metrics.DIRECTION.items():  # the quality column, the frontier and the charts agree
        assert columns.higher_is_better("quality", metric) is up and frontier.metric_higher_is_better(metric) is up
        assert plots.lower_is_better("quality", metric) is not up
    assert not columns.higher_is_better("quality", "logloss") and not columns.higher_is_better("quality", "MAE")
    assert set(metrics.HIGHER_IS_BETTER) == {m for m, up in metrics.DIRECTION.items() if up}
    assert not columns.higher_is_better("quality", "mae") and not columns.higher_is_better("quality", "rmse")
    df = pd.DataFrame({"candidate": ["a", "b", "c"], "status": "ok", "metric": "mae",
                       "p99_ms": [1.0, 2.0, 3.0], "quality": [0.5, 0.2, 0.9]})
    front = set(plots.pareto_front(df, "p99_ms", "quality")["candidate"])
    assert front == {"a", "b"}  # lower mae is better: c is slower and worse


def test_interval_columns_share_their_figures_format():
    low = columns.column("quality_drop_ci_low")
    assert low.fmt == columns.column("quality_drop").fmt and "95% CI low" in low.label
    assert columns.column("not_a_figure") is None and columns.title("not_a_figure") == "not_a_figure"
