#!/usr/bin/env python3
"""The README's two commands: `python3.11 dev.py main` and `python3.11 dev.py test`.

For a room without internet: `python3.11 dev.py wheelhouse DIR` (on a connected machine)
collects every pinned wheel into DIR; `python3.11 dev.py setup --offline DIR` (and `main` /
`test` with the same option) installs from DIR alone.

Each one first makes sure the project-local virtual environment `.venv` exists and
matches `pyproject.toml` + `constraints.txt` (reinstalling only when they changed),
then runs the main job or the whole test suite inside it. Standard library only, so it
runs on a fresh Python.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".optlab-installed"
INPUTS = ("pyproject.toml", "constraints.txt")
# optlab's extras CI installs: the test tools, and Ray so that tests/study/test_ray_executor.py runs
EXTRAS = "test,distributed"


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


def ensure_apt(packages: list[str], present: list[Path], what: str, how: str) -> bool:
    """Debian packages installed with apt as root when any of `present` is missing, else say how
    (`how`, one line). True when all of `present` exist afterwards."""
    if all(path.exists() for path in present):
        return True
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print(f"optlab: {what} needs {', '.join(packages)}; install: {how}", flush=True)
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run([apt, "update", "-q"], env=env)
        _run([apt, "install", "-y", "-q", "--no-install-recommends", *packages], env=env)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"optlab: installing {', '.join(packages)} with apt failed ({error}); install: {how}", flush=True)
        return False
    return all(path.exists() for path in present)


def ensure_browser() -> bool:
    """Debian's `chromium` for the browser test (Playwright drives it; a browser download at test
    time fails offline): installed with apt as root when missing, else say how. True if present."""
    how = ("sudo apt-get update && sudo apt-get install -y chromium (Debian/Ubuntu), or install Chromium "
           "and set OPTLAB_CHROMIUM=/path/to/chromium")
    return ensure_apt(["chromium"], [CHROMIUM], "the browser test", how)


LOAD_TOOLS = {"wrk": Path("/usr/bin/wrk"), "hey": Path("/usr/bin/hey")}


def ensure_load_tools() -> bool:
    """Debian's compiled HTTP load generators `wrk` and `hey` (optlab.serving.external_load drives
    them: optlab's own Python client tops out well below what a service answers), with apt as root."""
    how = "sudo apt-get update && sudo apt-get install -y wrk hey (Debian/Ubuntu)"
    return ensure_apt(list(LOAD_TOOLS), list(LOAD_TOOLS.values()), "the external HTTP load client", how)


def pip_source(offline: Path | None) -> list[str]:
    """pip options for where packages come from: the registry, or only the wheelhouse `offline`."""
    return [] if offline is None else ["--no-index", "--find-links", str(offline)]


def pip_install(python: Path | str, requirements: list[str], offline: Path | None = None,
                *options: str) -> None:
    """`pip install` pinned by constraints.txt, from the registry or (offline) the wheelhouse only."""
    _run([python, "-m", "pip", "--disable-pip-version-check", "install", "-q", *pip_source(offline),
          "-c", ROOT / "constraints.txt", *options, *requirements])


def collect_wheels(python: Path | str, folder: Path, requirements: list[str], *, project: bool = True) -> None:
    """Wheels for `requirements` (pinned by constraints.txt, with their dependencies; sdists are
    built into wheels here, so the offline install builds nothing), plus optlab's own wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    if requirements:
        _run([*pip, "wheel", "-q", "-w", folder, "-c", ROOT / "constraints.txt", *requirements])
    if project:  # built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
        import tempfile

        with tempfile.TemporaryDirectory(prefix="optlab-wheel-") as tmp:
            source = Path(tmp) / "optlab"
            shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
                ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "results", "out", "report",
                "test-artifacts", ".optlab-cache", ".pytest_cache", ".ruff_cache"))
            _run([*pip, "wheel", "-q", "--no-deps", "-w", folder, source])


def wheelhouse(python: Path, folder: Path) -> int:
    """Every pinned wheel a workshop room needs, in one folder (torch's CPU wheel included): the
    test extra's closure, the build backend (for the editable install) and pip itself."""
    start = time.perf_counter()
    collect_wheels(python, folder, ["torch", "setuptools>=68", "pip", f"{ROOT}[{EXTRAS}]"])
    wheels = list(folder.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 1e6
    print(f"wheelhouse {folder}: {len(wheels)} wheels, {size:,.0f} MB, in {time.perf_counter() - start:.0f} s; "
          f"install with: python3.11 dev.py setup --offline {folder}", flush=True)
    return 0


def setup(browser: bool = False, offline: Path | None = None) -> Path:
    """Create `.venv` and install optlab with its pinned dependencies, once; with `browser`,
    also Debian's chromium for the browser test; with `offline`, only from that wheelhouse
    (`dev.py wheelhouse DIR` made it), never from a registry."""
    if sys.version_info < (3, 11):
        sys.exit(f"optlab needs Python >= 3.11; this is {sys.version.split()[0]}. Run it with python3.11.")
    if offline is not None and not any(offline.glob("torch-*.whl")):
        sys.exit(f"--offline {offline}: no torch wheel there; make the folder with `python3.11 dev.py wheelhouse "
                 f"{offline}` on a machine with internet access")
    if browser:
        ensure_browser()
    if offline is None:  # apt needs the network; offline, say how instead
        ensure_load_tools()
    elif not all(path.exists() for path in LOAD_TOOLS.values()):
        print("optlab: offline setup skips apt; for the external HTTP load client run: "
              "sudo apt-get install -y wrk hey", flush=True)
    python = _venv_python()
    wanted = _fingerprint()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    start = time.perf_counter()
    if not python.exists():
        _run([sys.executable, "-m", "venv", VENV])
    # torch first, pinned: with the constraint in place pip never pulls a multi-GB CUDA build
    # on a CPU-only machine that has the CPU wheel (set PIP_EXTRA_INDEX_URL for the CPU index elsewhere).
    pip_install(python, ["torch"], offline)
    pip_install(python, ["-e", f"{ROOT}[{EXTRAS}]"], offline)
    STAMP.write_text(wanted)
    print(f"optlab environment ready in {time.perf_counter() - start:.0f} s ({VENV})", flush=True)
    return python


def _take_offline(extra: list[str]) -> tuple[Path | None, list[str]]:
    """Split `--offline DIR` off the extra arguments."""
    if "--offline" not in extra:
        return None, extra
    at = extra.index("--offline")
    if at + 1 >= len(extra):
        sys.exit("--offline needs a folder: python3.11 dev.py setup --offline DIR (made by `dev.py wheelhouse DIR`)")
    folder = Path(extra[at + 1]).resolve()
    if not folder.is_dir():
        sys.exit(f"--offline {folder}: no such folder; make it with `python3.11 dev.py wheelhouse {folder}`")
    return folder, extra[:at] + extra[at + 2:]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"main", "test", "setup", "wheelhouse"}:
        print(__doc__)
        print("usage: python3.11 dev.py main|test|setup [--offline DIR] [extra args]\n"
              "       python3.11 dev.py wheelhouse DIR")
        return 2
    command, extra = argv[0], argv[1:]
    if command == "wheelhouse":
        if len(extra) != 1:
            sys.exit("usage: python3.11 dev.py wheelhouse DIR (the folder to fill with wheels)")
        return wheelhouse(setup(), Path(extra[0]).resolve())
    offline, extra = _take_offline(extra)
    python = setup(browser=command in ("test", "setup"), offline=offline)
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
    """ruff, then the unit tests in random order, then every notebook once in smoke mode beside a CPU
    hog (nbval executes each notebook and checks its marked outputs; the order of its cells must not
    shuffle; no cell may show inf, nan or a RuntimeWarning)."""
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
        # beside a CPU hog, as on a busy laptop; a cell that shows inf/nan or a RuntimeWarning fails (tests/nbhog.py)
        steps.append([str(python), "-m", "pytest", "-p", "no:randomly", "-p", "tests.nbhog", "--hog", "1",
                      "--no-inf-nan", "--nbval-lax", *notebooks, "--durations=10", *extra])
    failed = 0
    for step in steps:
        print("+", " ".join(step), flush=True)
        code = subprocess.call(step, cwd=ROOT, env=env)
        if code < 0:  # killed by a signal: the step itself could print nothing about it
            print(f"step killed by {signal.Signals(-code).name}: {' '.join(step[:4])} ...", flush=True)
        failed |= code != 0
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
