"""dev.py's offline install: a wheelhouse made on a connected machine installs with no registry.

A small subset checks the mechanism (optlab's own wheel and two small pinned dependencies): the
wheels are collected first, then a fresh virtual environment installs them inside a network
namespace that has only loopback, with pip's own configuration switched off so the wheelhouse is
the only source. The full wheelhouse (torch included) is built and installed by hand, not here.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ["six", "packaging"]

INSTALL = """
import importlib.util, subprocess, sys, venv
from pathlib import Path
spec = importlib.util.spec_from_file_location("dev", sys.argv[1])
dev = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dev)
wheels, target = Path(sys.argv[2]), Path(sys.argv[3])
venv.create(target, with_pip=True)  # ensurepip's bundled wheel: no network
python = target / "bin" / "python"
dev.pip_install(python, ["optlab", "six", "packaging"], wheels, "--no-deps")
try:
    dev.pip_install(python, ["tqdm"], wheels, "--no-deps")  # not in the wheelhouse: must fail, not download
except subprocess.CalledProcessError:
    print("MISSING-REFUSED")
print(subprocess.run([python, "-c", "import importlib.metadata as m; "
                      "print('VERSIONS', m.version('optlab'), m.version('six'), m.version('packaging'))"],
                     capture_output=True, text=True, check=True).stdout)
"""


def _dev():
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.split(";")[0].strip()
    return pins


def test_wheelhouse_installs_with_no_network(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("`unshare` (util-linux) is missing: apt-get install -y util-linux", pytrace=False)
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-rn"]
    dev = _dev()
    wheels = tmp_path / "wheels"
    dev.collect_wheels(sys.executable, wheels, SUBSET, project=True)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    assert any(n.startswith("optlab-") for n in names) and any(n.startswith("six-") for n in names), names

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no configured index or find-links: the wheelhouse only
    done = subprocess.run([*prefix, "--", sys.executable, "-c", INSTALL, str(ROOT / "dev.py"), str(wheels),
                           str(tmp_path / "venv")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "MISSING-REFUSED" in done.stdout, "a package missing from the wheelhouse was installed from elsewhere"
    versions = next(line for line in done.stdout.splitlines() if line.startswith("VERSIONS")).split()[1:]
    pins = _pins()
    assert versions == ["0.1.0", pins["six"], pins["packaging"]]


def test_offline_needs_a_wheelhouse_with_torch(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "dev.py"), "setup", "--offline", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no torch wheel" in done.stderr and "dev.py wheelhouse" in done.stderr
