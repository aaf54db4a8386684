"""Cold start in fresh processes, with a loader written by the test (numpy only)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from optlab.instruments.coldstart import CHILD, ColdStart, ColdStartError, cold_start, run_once

LOADER = textwrap.dedent('''
    import numpy as np

    def load(path, scale=1.0):
        weights = np.load(path)
        return lambda batch: batch["x"] @ weights * scale

    def nan(path):
        return lambda batch: np.full(len(batch["x"]), np.nan)

    def one_row(path):
        return lambda batch: np.zeros((1, 3))
''')


@pytest.fixture()
def artifact(tmp_path, monkeypatch):
    (tmp_path / "numpy_loader.py").write_text(LOADER)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "w.npy"
    np.save(path, np.ones((4, 3), np.float32))
    return path


def batches(*rows):
    return [{"x": np.ones((n, 4), np.float32)} for n in rows]


def test_cold_start_parts_and_memory(artifact):
    cold = cold_start("numpy_loader:load", artifact, {"scale": 2.0}, batches(2, 50_000), repeats=2)
    assert cold.repeats == 2 and len(cold.runs) == 2 and not cold.imports_torch
    assert cold.cold_start_min_ms <= cold.cold_start_ms <= cold.cold_start_max_ms
    assert cold.startup_ms + cold.import_ms + cold.load_ms + cold.first_call_ms <= cold.cold_start_max_ms * 1.01
    assert cold.peak_rss_mb > cold.start_rss_mb > 0
    assert ColdStart.from_dict(cold.to_dict()) == cold


def test_big_batch_raises_the_peak(artifact):
    small = cold_start("numpy_loader:load", artifact, {}, batches(2), repeats=1)
    big = cold_start("numpy_loader:load", artifact, {}, batches(2, 2_000_000), repeats=1)
    assert big.peak_rss_mb > small.peak_rss_mb + 20  # 2M x 4 float32 in, 2M x 3 out: ~55 MB


@pytest.mark.parametrize("loader, message", [
    ("numpy_loader:nan", "NaN"), ("numpy_loader:one_row", r"shape \(1, 3\) for a batch of 2 rows"),
    ("no_such_module_here:load", "importing the loader.*ModuleNotFoundError"), ("numpy_loader", "module:function"),
])
def test_bad_loaders_are_clear_errors(artifact, loader, message):
    with pytest.raises(ColdStartError, match=f"mine.*{message}"):
        cold_start(loader, artifact, {}, batches(2), repeats=1, name="mine")


def test_unserialisable_options_and_no_batches(artifact):
    with pytest.raises(ColdStartError, match="JSON"):
        run_once("numpy_loader:load", artifact, {"scale": object()}, batches(1))
    with pytest.raises(ColdStartError, match="at least one input batch"):
        run_once("numpy_loader:load", artifact, {}, [])


def test_child_driver_imports_only_the_standard_library():
    source = CHILD.read_text()
    assert "import torch" not in source and "import optlab" not in source
    code = ("import runpy, sys; sys.argv = ['x']; "
            f"runpy.run_path({str(CHILD)!r}, run_name='child'); "
            "print(sorted(m for m in ('torch', 'numpy', 'optlab') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
