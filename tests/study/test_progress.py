"""The study's progress bar, saved: a notebook run headless keeps its final state, not "0/5"."""
from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient

from optlab.study.progress import progress_bar

CELL = """\
from optlab.study.progress import progress_bar
bar = progress_bar(total=5, initial=0, desc="optlab study", unit="candidate")
for i in range(5):
    bar.set_postfix_str(f"c{i}: ok", refresh=False)
    bar.update(1)
bar.close()
"""


def test_saved_notebook_keeps_the_bars_final_state(tmp_path):
    """Run as papermill does (nbclient, widget state stored): the bar's text fallback and its
    widget state both say 5 of 5, so a viewer with or without widgets shows the end."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=60, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    shown = [o for o in outputs if o.output_type == "display_data"]
    assert len(shown) == 1, outputs  # one output, updated in place (not a second bar)
    text = shown[0].data["text/plain"]
    assert "5/5" in text and "0/5" not in text, text
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"].endswith("ProgressModel")]
    assert [(b["value"], b["max"]) for b in bars] == [(5, 5)], json.dumps(bars)


def test_outside_a_notebook_it_is_plain_tqdm(capsys):
    bar = progress_bar(total=2, desc="x", unit="c")
    bar.update(2)
    bar.close()
    assert "2/2" in capsys.readouterr().err


def test_disabled_bar_prints_nothing(capsys):
    bar = progress_bar(total=2, disable=True)
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err == ""
