#!/usr/bin/env python3
"""The README's two commands: `python3.11 dev.py main` and `python3.11 dev.py test`.

Each one first makes sure the project-local virtual environment `.venv` exists and
matches `pyproject.toml` + `constraints.txt` (reinstalling only when they changed),
then runs the main job or the whole test suite inside it. Standard library only, so it
runs on a fresh Python.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".optlab-installed"
INPUTS = ("pyproject.toml", "constraints.txt")


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in INPUTS:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


CHROMIUM = Path(os.environ.get("OPTLAB_CHROMIUM", "/usr/bin/chromium"))


def ensure_browser() -> bool:
    """Debian's `chromium` for the browser test (Playwright drives it; a browser download at test
    time fails offline): installed with apt as root when missing, else say how. True if present."""
    if CHROMIUM.exists():
        return True
    how = ("sudo apt-get update && sudo apt-get install -y chromium (Debian/Ubuntu), or install Chromium "
           "and set OPTLAB_CHROMIUM=/path/to/chromium")
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print(f"optlab: the browser test needs Chromium at {CHROMIUM}; install it: {how}", flush=True)
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run([apt, "update", "-q"], env=env)
        _run([apt, "install", "-y", "-q", "--no-install-recommends", "chromium"], env=env)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"optlab: installing chromium with apt failed ({error}); install it: {how}", flush=True)
        return False
    return CHROMIUM.exists()


def setup(browser: bool = False) -> Path:
    """Create `.venv` and install optlab with its pinned dependencies, once; with `browser`,
    also Debian's chromium for the browser test."""
    if sys.version_info < (3, 11):
        sys.exit(f"optlab needs Python >= 3.11; this is {sys.version.split()[0]}. Run it with python3.11.")
    if browser:
        ensure_browser()
    python = _venv_python()
    wanted = _fingerprint()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    start = time.perf_counter()
    if not python.exists():
        _run([sys.executable, "-m", "venv", VENV])
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    # torch first, pinned: with the constraint in place pip never pulls a multi-GB CUDA build
    # on a CPU-only machine that has the CPU wheel (set PIP_EXTRA_INDEX_URL for the CPU index elsewhere).
    _run([*pip, "install", "-q", "-c", ROOT / "constraints.txt", "torch"])
    _run([*pip, "install", "-q", "-c", ROOT / "constraints.txt", "-e", f"{ROOT}[test]"])
    STAMP.write_text(wanted)
    print(f"optlab environment ready in {time.perf_counter() - start:.0f} s ({VENV})", flush=True)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"main", "test", "setup"}:
        print(__doc__)
        print("usage: python3.11 dev.py main|test|setup [extra args]")
        return 2
    command, extra = argv[0], argv[1:]
    python = setup(browser=command in ("test", "setup"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "OPTLAB_HEADLESS": "1"}
    if command == "setup":
        return 0
    if command == "main":
        return subprocess.call([str(python), "-m", "optlab.cli", "main", *extra], cwd=ROOT, env=env)
    return run_tests(python, env, extra)


def _order_seed() -> int:
    """The random test order's seed: derived from the commit, so a CI failure replays exactly."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        return int(head.stdout.strip()[:8], 16)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return int(time.time())


def run_tests(python: Path, env: dict, extra: list[str]) -> int:
    """ruff, then the unit tests in random order, then every notebook once in smoke mode (nbval
    executes each notebook and checks its marked outputs; the order of its cells must not shuffle)."""
    env = {**env, "OPTLAB_SMOKE": "1"}
    steps = [[str(python), "-m", "ruff", "check", "optlab", "tests", "datasets", "dev.py"]]
    seed = _order_seed()
    print(f"unit tests in random order, seed {seed} (from the commit; rerun with -p randomly -p "
          f"'randomly_seed={seed}' or pass --randomly-seed={seed})", flush=True)
    steps.append([str(python), "-m", "pytest", "tests", "-p", "randomly", f"--randomly-seed={seed}",
                  "--durations=15", *extra])
    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb"))
    shutil.rmtree(ROOT / "notebooks" / "results", ignore_errors=True)  # nbval measures afresh, not from a store
    if notebooks:
        steps.append([str(python), "-m", "pytest", "-p", "no:randomly", "--nbval-lax", *notebooks,
                      "--durations=10", *extra])
    failed = 0
    for step in steps:
        print("+", " ".join(step), flush=True)
        failed |= subprocess.call(step, cwd=ROOT, env=env) != 0
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
