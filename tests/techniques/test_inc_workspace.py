"""INC writes its nc_workspace/ under optlab's work directory, never into the current directory."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("neural_compressor")

SCRIPT = """
import os, sys
from pathlib import Path
from optlab.data.datasets import load
from optlab.models import zoo
from optlab.recipes.recipe import Quantize
from optlab.techniques.registry import apply
from neural_compressor.common.base_config import options

data = load("digits", smoke=True)
model = zoo.get("digits", size="student", smoke=True, data=data)
before = options._workspace
work = Path(sys.argv[1])
candidate = apply(Quantize("weight-only-int8", runtime="inc"), model, data, workdir=work)
assert options._workspace == before, (options._workspace, before)  # INC's global setting is restored
print("WORKSPACES", sorted(map(str, Path.cwd().rglob("nc_workspace"))), sorted(map(str, work.rglob("nc_workspace"))))
"""


def test_inc_leaves_no_workspace_in_the_current_directory(tmp_path):
    cwd, work = tmp_path / "notebook-dir", tmp_path / "work"
    cwd.mkdir()
    # A fresh process: INC creates its workspace when first imported, which must be caught too.
    env = {**os.environ, "OPTLAB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(work)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(cwd.rglob("nc_workspace")), f"INC wrote into the current directory: {list(cwd.iterdir())}"
    assert not list(cwd.iterdir())
