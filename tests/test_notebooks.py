"""Every walkthrough notebook is committed clean (dev.py test then executes each once, in smoke mode, under nbval)."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from optlab.cli.notebook_outputs import bulky_outputs, is_checked

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]


def test_there_are_walkthroughs():
    names = {p.name for p in NOTEBOOKS}
    for expected in ("00_tour.ipynb", "01_quantization.ipynb", "02_pruning.ipynb", "03_distillation.ipynb",
                     "04_compilation.ipynb", "10_bring_your_own_model.ipynb"):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_bulky_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    problems = bulky_outputs(notebook)
    assert not problems, f"{path.name}: " + "; ".join(problems)
    assert notebook.metadata.get("kernelspec", {}).get("name"), f"{path.name}: papermill needs a kernelspec"
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "smoke = False" in parameters[0].source, \
        f"{path.name}: needs one cell tagged 'parameters' with a smoke flag"
    assert any(is_checked(c) and c.outputs for c in notebook.cells), \
        f"{path.name}: its checked cell has no stored output (run: optlab notebooks refresh {path.name})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_a_full_flag_defaults_off_and_says_what_it_adds_and_how_long(path):
    """The workshop setting is the default; the longer sections sit behind `full`, which names its cost."""
    source = next(c.source for c in nbformat.read(path, as_version=4).cells
                  if "parameters" in c.metadata.get("tags", []))
    if "full =" not in source:
        return
    assert "full = False" in source, f"{path.name}: full must default to False (the workshop setting)"
    comment = source[: source.index("full = False")]
    assert "full = True" in comment and re.search(r"about [\d-]+ more minutes?", comment), \
        f"{path.name}: the comment above `full = False` says what full = True adds and about how many more minutes"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_papermill_reads_every_parameter(path):
    """papermill parses each assignment of the parameters cell (`-p name value` overrides only
    what it read); a comment holding "= " made it skip the line with a warning."""
    import ast

    from papermill.translators import PythonTranslator

    source = next(c.source for c in nbformat.read(path, as_version=4).cells
                  if "parameters" in c.metadata.get("tags", []))
    assigned = [node.targets[0].id for node in ast.parse(source).body if isinstance(node, ast.Assign)]
    assert [p.name for p in PythonTranslator.inspect({"source": source})] == assigned
