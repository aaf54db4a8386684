"""Runs inside a fresh interpreter for `optlab.instruments.coldstart`: import a loader, load the
artifact, predict, and report the phase times and the peak resident memory.

It imports only the standard library before the loader (numpy comes after, to read the
inputs), so the import figure is the loader module's own, and it is run by path through
runpy so that not even the optlab package is imported on its behalf.

It dies with its parent: on Linux the kernel sends it SIGKILL when the parent goes
(prctl PR_SET_PDEATHSIG); elsewhere a daemon thread polls the parent's pid. A SIGKILLed
study therefore leaves no orphan running on (its temp folder is cleaned by the next start).
"""
import time

T_START_NS = time.monotonic_ns()

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402


def _proc_status_bytes(key):
    # Linux: VmHWM/VmRSS belong to this process image (getrusage's ru_maxrss survives exec
    # and would report the parent's memory).
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes():
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows: no getrusage
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_bytes():
    current = _proc_status_bytes("VmRSS")
    return current if current is not None else peak_rss_bytes()


PR_SET_PDEATHSIG = 1
SIGKILL = 9


def die_with_parent(parent_pid):
    """Exit when the process that started us is gone (it may already be: check after arming)."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if parent_pid and os.getppid() != parent_pid:
        os._exit(3)  # the parent died before we could arm: nobody is waiting for this run
    if not armed and parent_pid:
        import threading

        def watch():
            while os.getppid() == parent_pid:
                time.sleep(0.2)
            os._exit(3)

        threading.Thread(target=watch, name="optlab-parent-watch", daemon=True).start()


def run(spec):
    phase = "importing the loader"
    report = {"t_start_ns": T_START_NS, "rss_start_bytes": rss_bytes()}
    try:
        module_name, _, function_name = spec["loader"].partition(":")
        t0 = time.monotonic_ns()
        loader = getattr(importlib.import_module(module_name), function_name)
        t1 = time.monotonic_ns()
        report.update(import_ns=t1 - t0, torch_after_import="torch" in sys.modules)
        phase = "reading the inputs"
        import numpy as np

        with np.load(spec["inputs"]) as archive:
            batches = [{name: archive[f"b{i}.{name}"] for name in names} for i, names in enumerate(spec["batches"])]
        phase = "loading the artifact"
        t2 = time.monotonic_ns()
        predict = loader(spec["artifact_path"], **spec["loader_options"])
        t3 = time.monotonic_ns()
        phase = "making the first prediction"
        output = np.asarray(predict(batches[0]))
        t4 = time.monotonic_ns()
        report.update(load_ns=t3 - t2, first_call_ns=t4 - t3, t_first_ns=t4, output_shape=list(output.shape),
                      output_finite=bool(np.all(np.isfinite(output))) if output.dtype.kind in "fc" else True)
        phase = "predicting the remaining batches"
        for batch in batches[1:]:
            predict(batch)
        report.update(peak_rss_bytes=peak_rss_bytes(), torch_imported="torch" in sys.modules, ok=True)
    except BaseException as error:  # noqa: BLE001 - report every failure to the parent, then exit non-zero
        report.update(ok=False, phase=phase, error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=8))
    return report


def main(spec_path):
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    die_with_parent(spec.get("parent_pid"))
    report = run(spec)
    with open(spec["result"], "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
