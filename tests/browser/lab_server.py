"""A JupyterLab server for the browser test, inside a loopback-only network namespace.

Imported by drive_lab.py (a script: this folder is on its sys.path). The server and its kernels
get a private Jupyter home (no user settings leak in), smoke mode, this process's environment
(PYTHONPATH included, so the kernels import the optlab the test runs) and no OPTLAB_HEADLESS
(a browser is attached). It is stopped on `stop()` or at its deadline, whichever is first.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Bring `lo` up in a fresh network namespace (what `ip link set lo up` does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _setting(home: Path, plugin: str, values: dict) -> None:
    path = home / "settings" / "@jupyterlab" / plugin
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))


def lab_env(root: Path) -> dict[str, str]:
    """The environment of JupyterLab and its kernels: private config/settings/runtime dirs,
    smoke mode, no headless flag."""
    home = root / ".lab-home"
    env = {k: v for k, v in os.environ.items() if k != "OPTLAB_HEADLESS"}
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces", "IPYTHONDIR": "ipython"}
    for name, sub in dirs.items():
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / sub)
    # No news or update checks (they would reach out to the internet, and pop up a question).
    _setting(home, "apputils-extension/notification.jupyterlab-settings",
             {"fetchNews": "false", "checkForUpdates": False})
    # Every cell rendered and laid out, on screen or not: the geometry check measures all charts.
    _setting(home, "notebook-extension/tracker.jupyterlab-settings", {"windowingMode": "none"})
    env.update(OPTLAB_SMOKE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


class Lab:
    """A JupyterLab server over `root`, stopped on `stop()` or at the deadline, whichever is first."""

    def __init__(self, python: str, root: Path, deadline_s: float):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        env = lab_env(root)
        self.log = open(root / ".lab-home" / "server.log", "w")  # noqa: SIM115 - closed in stop()
        # coreutils' timeout is the last guard: the server dies at the deadline even if the driver is killed
        cmd = ["timeout", "-k", "10", str(int(deadline_s)), python, "-m", "jupyterlab", "--no-browser",
               "--ip=127.0.0.1", f"--port={self.port}",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.port_retries=0", "--ServerApp.terminals_enabled=False",
               "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if os.geteuid() == 0:  # CI containers run as root
            cmd.append("--allow-root")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._timer = threading.Timer(deadline_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode} before it was ready")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=2) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.2)  # polling a port that is not open yet: nothing to wait on but time
        raise TimeoutError(f"JupyterLab did not answer on {self.base} within {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM the server's process group (kernels included), SIGKILL after 10 s."""
        self._timer.cancel()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
