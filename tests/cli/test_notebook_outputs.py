"""Committed notebooks: stripped, except small plain-text checked cells."""
from __future__ import annotations

import nbformat

from optlab.cli.notebook_outputs import bulky_outputs, strip


def _notebook():
    nb = nbformat.v4.new_notebook()
    plain = nbformat.v4.new_code_cell("x = 1")
    plain.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "AAAA" * 5000})]
    plain.execution_count = 3
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint('ok')")
    checked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok\n")]
    nb.cells = [plain, checked]
    return nb


def test_bulky_outputs_are_reported_and_stripped():
    nb = _notebook()
    assert any("outputs are committed" in p for p in bulky_outputs(nb))
    clean = strip(nb)
    assert bulky_outputs(clean) == []
    assert clean.cells[0].outputs == [] and clean.cells[1].outputs[0]["text"] == "ok\n"


def test_checked_cells_must_stay_small_and_plain():
    nb = _notebook()
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"text/html": "<b>x</b>" * 1000})]
    problems = bulky_outputs(strip(nb))
    assert any("rich data" in p for p in problems) and any("bytes" in p for p in problems)
