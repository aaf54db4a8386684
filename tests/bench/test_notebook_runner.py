"""The notebook timing bench: every walkthrough is found, the table judges each against the workshop
budget, a smoke run is not judged, and a bad --only names the walkthroughs before anything runs."""
from __future__ import annotations

import pytest

from optlab.bench import notebook_runner as nr


def test_every_numbered_notebook_is_a_walkthrough_in_order():
    names = [p.name for p in nr.walkthrough_notebooks()]
    assert names == sorted(names) and "00_tour.ipynb" in names and "08_llm.ipynb" in names


def test_the_table_judges_each_notebook_against_the_budget_and_sums_every_step():
    steps = [{"step": "model: bids", "seconds": 12.0}]
    load = {"load_before": 0.5, "load_after": 1.5}
    records = [{"notebook": "01_quantization.ipynb", "seconds": 95.5, "ok": True, **load},
               {"notebook": "05_serving.ipynb", "seconds": 200.0, "ok": True, **load},
               {"notebook": "07_transformers.ipynb", "seconds": 3.0, "ok": False, **load}]
    table = nr.timing_table(steps, records, nr.WORKSHOP_BUDGET_S)
    lines = table.splitlines()
    assert "within" in next(x for x in lines if x.startswith("01_"))
    assert "OVER the 180 s budget" in next(x for x in lines if x.startswith("05_"))
    assert "FAILED" in next(x for x in lines if x.startswith("07_"))
    assert lines[-1].split()[-1] == "310.5"
    smoke = nr.timing_table(steps, records, None)
    assert "within" not in smoke and "OVER" not in smoke


def test_an_unknown_notebook_is_refused_naming_the_walkthroughs():
    with pytest.raises(SystemExit, match="no notebook matches; the walkthroughs are 00_tour.ipynb"):
        nr.main(["--only", "99_nothing"])
