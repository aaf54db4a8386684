"""ol.readable: the notebooks' tables never show a person NaN or inf."""
import numpy as np
import pandas as pd

import optlab as ol
from tests.nbhog import forbidden_text


def _results():
    return pd.DataFrame({"candidate": ["baseline", "int8", "broken"], "status": ["ok", "ok", "error"],
                         "quality_drop": [np.nan, 0.012345, np.nan], "throughput_per_s": [100.0, np.inf, np.nan],
                         "threads": [2, 2, 2], "error": [None, None, "RuntimeError: no kernel"]})


def test_missing_figures_are_words_and_numbers_are_rounded():
    shown = ol.readable(_results(), digits=3)
    assert shown["quality_drop"].tolist() == ["not measured", 0.012, "not measured"]
    assert shown["throughput_per_s"].tolist() == [100.0, "not available", "not measured"]
    assert shown["error"].tolist() == ["", "", "RuntimeError: no kernel"]  # no error is a blank, not a figure
    assert shown["threads"].dtype == np.int64  # a complete column keeps its dtype


def test_nothing_a_person_reads_says_nan_or_inf():
    shown = ol.readable(_results())
    outputs = [{"output_type": "execute_result",
                "data": {"text/plain": repr(shown), "text/html": shown._repr_html_()}}]
    assert forbidden_text(outputs) == []
    raw = [{"output_type": "execute_result", "data": {"text/plain": repr(_results())}}]
    assert forbidden_text(raw)  # the check itself would catch the raw table


def test_the_callers_frame_is_untouched():
    frame = _results()
    ol.readable(frame)
    assert np.isnan(frame.loc[0, "quality_drop"]) and np.isinf(frame.loc[1, "throughput_per_s"])
