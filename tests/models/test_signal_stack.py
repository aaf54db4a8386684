"""The alternate signal stack survives OpenVINO plugins freed out of order, and a freed one is repaired.

Each case runs in a child process: the failure it guards against kills the process (SIGSEGV) when a
signal arrives, and the cases change the thread's signal stack on purpose."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack is read through Linux's libc")


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "case.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, "-X", "faulthandler", str(script), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""})


@linux_only
def test_ctrl_c_after_openvino_models_freed_in_creation_order(tmp_path):
    """Two models compiled through optlab's OpenVINO loader, freed first-made-first (the order the
    CPU plugin does not expect) and on another thread: Ctrl-C still raises KeyboardInterrupt."""
    done = _run("""
        import gc, signal, sys, threading
        import openvino as ov, torch
        from optlab.models import runtimes, signal_stack

        folder = sys.argv[1]
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a parent run in the background ignores SIGINT
        ov.save_model(ov.convert_model(torch.nn.Linear(4, 2), example_input=torch.zeros(1, 4)), folder + "/m.xml")
        before = signal_stack.current()
        first = runtimes.openvino_predict_fn(folder + "/m.xml", threads=1)
        second = runtimes.openvino_predict_fn(folder + "/m.xml", threads=1)
        third = [runtimes.openvino_predict_fn(folder + "/m.xml", threads=1)]
        del first; gc.collect()
        del second; gc.collect()
        worker = threading.Thread(target=third.clear); worker.start(); worker.join(); gc.collect()
        now = signal_stack.current()
        assert signal_stack.mapped(now) and now.size >= before.size, (before, now)
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            print("interrupted")
    """, tmp_path)
    assert done.returncode == 0, f"rc {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip().splitlines()[-1] == "interrupted"


@linux_only
def test_a_freed_signal_stack_is_repaired_before_a_signal_lands(tmp_path):
    """What OpenVINO leaves behind, made by hand: the thread's stack is unmapped memory. `repair`
    notices (mincore), installs one optlab owns, and the study's time-limit alarm lands safely."""
    done = _run("""
        import ctypes, mmap, signal, time
        from optlab.models import signal_stack
        from optlab.study.hardstop import HardStop

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        size = 16384
        address = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        stack = signal_stack._StackT(address, 0, size)
        assert libc.sigaltstack(ctypes.byref(stack), None) == 0
        assert signal_stack.mapped(signal_stack.current()) and not signal_stack.repair()
        assert libc.munmap(ctypes.c_void_p(address), ctypes.c_size_t(size)) == 0
        assert not signal_stack.mapped(signal_stack.current())

        stop = HardStop()
        try:
            with stop.armed(time.monotonic() + 0.05):  # repairs, then the alarm fires on the new stack
                time.sleep(5)
        except KeyboardInterrupt:
            pass
        repaired = signal_stack.current()
        assert stop.fired and signal_stack.owned(repaired) and signal_stack.mapped(repaired), repaired
        print("repaired", repaired.size)
    """, tmp_path)
    assert done.returncode == 0, f"rc {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split() == ["repaired", "65536"]


@linux_only
def test_kept_replaces_a_stack_the_block_swapped_and_leaves_an_untouched_one(tmp_path):
    done = _run("""
        import ctypes
        from optlab.models import signal_stack

        libc = ctypes.CDLL(None, use_errno=True)
        untouched = signal_stack.current()
        with signal_stack.kept():
            pass
        assert signal_stack.current() == untouched
        theirs = ctypes.create_string_buffer(20000)
        with signal_stack.kept():  # a library installs its own stack, as OpenVINO's CPU plugin does
            assert libc.sigaltstack(ctypes.byref(signal_stack._StackT(ctypes.addressof(theirs), 0, 20000)), None) == 0
        now = signal_stack.current()
        assert signal_stack.owned(now) and now.address != ctypes.addressof(theirs) and now.size >= 20000, now
        with signal_stack.kept():  # already optlab's: nothing to replace
            pass
        assert signal_stack.current() == now
        print("kept")
    """, tmp_path)
    assert done.returncode == 0, f"rc {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "kept"
