"""Cold start and peak memory, measured in fresh processes.

A candidate with a `loader` ("module:function") is re-created in a new interpreter:
start the process, import the loader module, load the artifact (build the session),
make the first prediction, then predict the remaining batches. Each run reports its
phase times and its peak resident memory, so the notebook's own memory never pollutes
the figure. "Cold" means a fresh process; the operating system's file cache stays warm.

The child dies with this process (see coldstart_child.die_with_parent). Its inputs go to
a temp folder named after this process's pid (`optlab-coldstart-<pid>-*`); a folder left
by a process that was killed is removed at the next start (`clean_stale_temp_folders`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

CHILD = Path(__file__).with_name("coldstart_child.py")
PHASES = ("startup", "import", "load", "first_call")
TEMP_PREFIX = "optlab-coldstart-"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")


class ColdStartError(ValueError):
    """A fresh process could not load or run the candidate."""


@dataclass
class ColdStart:
    """Medians over fresh-process runs; `runs` keeps every run's phases in ms."""

    repeats: int
    cold_start_ms: float  # process start -> first prediction returned (median)
    cold_start_min_ms: float
    cold_start_max_ms: float
    startup_ms: float  # interpreter start, before the loader import
    import_ms: float
    load_ms: float
    first_call_ms: float
    peak_rss_mb: float | None  # highest peak resident memory over the runs
    start_rss_mb: float | None  # the bare interpreter's resident memory, for reference
    imports_torch: bool  # torch was in sys.modules after the first prediction
    runs: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ColdStart":
        return cls(**data)


def _child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    # The child can import whatever this process can (a notebook's cwd, an editable checkout).
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + env.get("PYTHONPATH", "").split(os.pathsep)))
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def _write_inputs(path: Path, batches: Sequence[dict[str, np.ndarray]]) -> list[list[str]]:
    arrays = {f"b{i}.{name}": np.asarray(value) for i, batch in enumerate(batches) for name, value in batch.items()}
    np.savez(path, **arrays)
    return [list(batch) for batch in batches]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temp_folders(folder: str | os.PathLike | None = None) -> list[Path]:
    """Remove cold-start temp folders whose creating process is gone (killed mid-run);
    returns the folders removed. `folder` is where they were made (default: the temp dir)."""
    base = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        candidates = list(base.glob(TEMP_PREFIX + "*"))
    except OSError:
        return removed
    for path in candidates:
        match = _TEMP_NAME.match(path.name)
        if not match or not path.is_dir():
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def run_once(loader: str, artifact_path: str | os.PathLike | None, loader_options: dict[str, Any],
             batches: Sequence[dict[str, np.ndarray]], *, name: str = "candidate", threads: int | None = None,
             timeout_s: float = 300.0, workdir: str | os.PathLike | None = None) -> dict[str, Any]:
    """One fresh process: returns its report (phase times in ms, peak memory, shapes)."""
    if ":" not in loader:
        raise ColdStartError(f"{name}: loader {loader!r} must be 'module:function'")
    if not batches:
        raise ColdStartError(f"{name}: cold start needs at least one input batch")
    try:
        json.dumps(loader_options)
    except TypeError as error:
        raise ColdStartError(f"{name}: loader_options must be JSON-serialisable to reach a fresh process "
                             f"({error}); pass paths and numbers, not objects") from None
    clean_stale_temp_folders(workdir)
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=workdir) as tmp:
        tmp = Path(tmp)
        spec = {"parent_pid": os.getpid(), "loader": loader,
                "artifact_path": None if artifact_path is None else os.fspath(artifact_path),
                "loader_options": loader_options, "inputs": os.fspath(tmp / "inputs.npz"),
                "batches": _write_inputs(tmp / "inputs.npz", batches), "result": os.fspath(tmp / "result.json")}
        (tmp / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        command = [sys.executable, "-c", f"import runpy; runpy.run_path({os.fspath(CHILD)!r}, run_name='__main__')",
                   os.fspath(tmp / "spec.json")]
        spawn_ns = time.monotonic_ns()
        try:
            proc = subprocess.run(command, env=_child_env(threads), capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ColdStartError(f"{name}: the fresh process did not finish within {timeout_s:.0f} s; "
                                 "raise timeout_s or check the loader") from None
        result_path = tmp / "result.json"
        if not result_path.exists():
            tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
            raise ColdStartError(f"{name}: the fresh process exited with code {proc.returncode} "
                                 f"before reporting:\n{tail}")
        report = json.loads(result_path.read_text(encoding="utf-8"))
    if not report.get("ok"):
        raise ColdStartError(f"{name}: cold start failed while {report.get('phase')} with loader {loader!r}: "
                             f"{report.get('error')}\n{report.get('traceback', '')}")
    return {
        "startup_ms": (report["t_start_ns"] - spawn_ns) / 1e6,
        "import_ms": report["import_ns"] / 1e6,
        "load_ms": report["load_ns"] / 1e6,
        "first_call_ms": report["first_call_ns"] / 1e6,
        "total_ms": (report["t_first_ns"] - spawn_ns) / 1e6,
        "peak_rss_mb": None if report["peak_rss_bytes"] is None else report["peak_rss_bytes"] / 2**20,
        "start_rss_mb": None if report["rss_start_bytes"] is None else report["rss_start_bytes"] / 2**20,
        "torch_after_import": bool(report["torch_after_import"]),
        "torch_imported": bool(report["torch_imported"]),
        "output_shape": report["output_shape"],
        "output_finite": report["output_finite"],
    }


def cold_start(loader: str, artifact_path: str | os.PathLike | None, loader_options: dict[str, Any] | None,
               batches: Sequence[dict[str, np.ndarray]], *, repeats: int = 5, name: str = "candidate",
               threads: int | None = None, timeout_s: float = 300.0) -> ColdStart:
    """Run `repeats` fresh processes; the first batch is the first prediction, the others
    only raise the memory high-water mark. Checks the first output's batch size."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs = [run_once(loader, artifact_path, loader_options or {}, batches, name=name, threads=threads,
                     timeout_s=timeout_s) for _ in range(repeats)]
    first = runs[0]
    rows = next(iter(batches[0].values())).shape[0]
    if not first["output_shape"] or first["output_shape"][0] != rows:
        raise ColdStartError(f"{name}: the loaded predict returned shape {tuple(first['output_shape'])} for a batch "
                             f"of {rows} rows; the loader must return the same predict as the candidate")
    if not first["output_finite"]:
        raise ColdStartError(f"{name}: the loaded predict returned NaN or infinite values")
    totals = np.array([run["total_ms"] for run in runs])
    peaks = [run["peak_rss_mb"] for run in runs if run["peak_rss_mb"] is not None]
    starts = [run["start_rss_mb"] for run in runs if run["start_rss_mb"] is not None]
    keep = ("startup_ms", "import_ms", "load_ms", "first_call_ms", "total_ms", "peak_rss_mb")
    return ColdStart(
        repeats=repeats,
        cold_start_ms=float(np.median(totals)), cold_start_min_ms=float(totals.min()),
        cold_start_max_ms=float(totals.max()),
        **{f"{phase}_ms": float(np.median([run[f"{phase}_ms"] for run in runs])) for phase in PHASES},
        peak_rss_mb=max(peaks) if peaks else None,
        start_rss_mb=float(np.median(starts)) if starts else None,
        imports_torch=any(run["torch_imported"] for run in runs),
        runs=[{key: run[key] for key in keep} for run in runs],
    )
