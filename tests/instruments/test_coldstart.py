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


SLOW_LOADER = textwrap.dedent('''
    import os
    import time

    def load(path, pid_file):
        with open(pid_file, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(120)
        return lambda batch: batch["x"]
''')

PARENT = textwrap.dedent('''
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from optlab.instruments.coldstart import run_once
    run_once("slow_loader:load", None, {"pid_file": sys.argv[2]}, [{"x": np.ones((2, 4), np.float32)}],
             workdir=sys.argv[3])
''')


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigkill_of_the_parent_takes_the_child_along_and_its_temp_folder_is_cleaned_next_time(tmp_path):
    import os
    import signal
    import time

    from optlab.instruments.coldstart import TEMP_PREFIX, clean_stale_temp_folders

    (tmp_path / "slow_loader.py").write_text(SLOW_LOADER)
    pid_file, work = tmp_path / "child.pid", tmp_path / "work"
    work.mkdir()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), str(pid_file), str(work)])
    child = None
    try:
        for _ in range(600):  # the child is loading (sleeping) once it wrote its pid
            if pid_file.exists() and pid_file.read_text():
                child = int(pid_file.read_text())
                break
            time.sleep(0.1)
        assert child is not None, "the cold-start child never started"
        folders = list(work.glob(TEMP_PREFIX + "*"))
        assert len(folders) == 1 and folders[0].name.startswith(f"{TEMP_PREFIX}{parent.pid}-")
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for _ in range(50):
            if _gone(child):
                break
            time.sleep(0.1)
        assert _gone(child), "the cold-start child outlived its SIGKILLed parent"
        assert folders[0].exists()  # a SIGKILL runs no clean-up ...
        assert clean_stale_temp_folders(work) == folders and not folders[0].exists()  # ... the next start does
    finally:
        parent.kill()
        parent.wait()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_cleaning_keeps_folders_of_live_processes(tmp_path):
    import os

    from optlab.instruments.coldstart import TEMP_PREFIX, clean_stale_temp_folders

    mine = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-abc"
    other = tmp_path / "optlab-something-else"
    mine.mkdir()
    other.mkdir()
    assert clean_stale_temp_folders(tmp_path) == [] and mine.exists() and other.exists()
