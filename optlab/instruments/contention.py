"""Was the machine busy while we timed? CPU used by other processes, and CPU steal.

A latency figure taken while other processes compete for the cores is not the candidate's
own: under a load average of 20 on 2 cores a 0.08 ms model measured 48 ms, and the
bootstrap interval alone did not notice (every sample was slow alike). So the timing
window is bracketed by two readings of the machine-wide CPU counters (/proc/stat, read
through psutil) and of this process's own CPU time; what the machine spent beyond ours is
other processes' share (child processes count as others: they compete with the timed
calls too). Steal (a hypervisor giving our vCPU to another guest) is read the same way.

    window = BusyWindow.start()
    ... timed calls ...
    busy = window.stop()          # Busy(other_cpu_share=0.61, steal_share=0.0, wall_s=2.0)
    busy.contended                # True above the thresholds below

On a Ray node the node's own processes run beside every measurement: raylet, gcs_server, the
dashboard and runtime-env agents, the log monitor, and worker processes waiting for a task
(titled "ray::IDLE"). Idle, they wake every few hundred milliseconds to report and poll; that is the
cluster, not a competing job, and on a 2-core node it must not make a quiet node look busy. So while
this process has imported Ray (a Ray worker, or a study's driver: elsewhere the process scan would
be a /proc walk per window for nothing), the CPU those idle processes used during the window, up to
RAY_IDLE_ALLOWANCE_CORES, is left out of the other processes' share and reported apart
(`ray_idle_share`). Anything else counts as before: a Ray worker running a task ("ray::<task>"), a
process started during the window, and idle daemons beyond the allowance (then they are not idle).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Sequence

# psutil is imported on use: optional; without it the contention figure is not available, not an
# error.

# Shares of the whole machine (all logical cores) over the window.
BUSY_OTHER_THRESHOLD = 0.25  # other processes used more than a quarter of the machine
STEAL_THRESHOLD = 0.10  # the hypervisor took more than a tenth
# At most this many cores' worth of idle Ray processes' CPU is left out of "other": an idle local node
# (raylet, gcs_server, agents, log monitor, one idle worker) used 0.036, 0.042 and 0.061 cores in three
# 10 s samples on a 2-core AMD EPYC (session 13, Ray 2.60); a quarter core is about 4 times that, and a
# constant in cores, not a share, since the daemons' work does not grow with the machine.
RAY_IDLE_ALLOWANCE_CORES = 0.25

# Ray's own processes (Ray 2.x names, ray._private.ray_constants): executables, process titles that
# Ray sets (setproctitle), and the scripts its Python daemons run. "ray::IDLE" also covers
# "ray::IDLE_SpillWorker" and "ray::IDLE_RestoreWorker" (I/O workers with nothing to do).
RAY_DAEMON_EXECUTABLES = frozenset({"raylet", "gcs_server"})
RAY_IDLE_TITLES = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray-dashboard-")
RAY_DAEMON_SCRIPTS = ("ray/_private/log_monitor.py", "ray/autoscaler/_private/monitor.py",
                      "ray/autoscaler/v2/monitor.py", "ray/dashboard/dashboard.py", "ray/dashboard/agent.py",
                      "ray/_private/runtime_env/agent/main.py")


def is_idle_ray_process(name: str | None, cmdline: Sequence[str] | None) -> bool:
    """Whether a process (its name, as /proc/<pid>/comm has it, and its command line) is one of Ray's
    own daemons or an idle Ray worker: the processes a Ray node runs with no task of ours on it. A
    worker running a task is titled "ray::<task name>" and is not idle."""
    name = (name or "").strip()
    words = [str(word) for word in (cmdline or ()) if str(word).strip()]
    title = " ".join(words).strip()
    if os.path.basename(name) in RAY_DAEMON_EXECUTABLES:
        return True
    if words and os.path.basename(words[0]) in RAY_DAEMON_EXECUTABLES:
        return True
    if any(title.startswith(prefix) or name.startswith(prefix) for prefix in RAY_IDLE_TITLES):
        return True
    return any(word.replace("\\", "/").endswith(script) for word in words[:3] for script in RAY_DAEMON_SCRIPTS)


def _ray_loaded() -> bool:
    return "ray" in sys.modules


@dataclass(frozen=True)
class Busy:
    """What the rest of the machine did during a window. Shares are of all logical cores
    (0 = idle apart from us, 1 = every core busy with others); None where unreadable."""

    other_cpu_share: float | None
    steal_share: float | None
    wall_s: float
    ray_idle_share: float | None = None  # idle Ray processes' CPU left out of other_cpu_share (None: not looked)

    @property
    def contended(self) -> bool:
        return bool((self.other_cpu_share or 0.0) > BUSY_OTHER_THRESHOLD
                    or (self.steal_share or 0.0) > STEAL_THRESHOLD)

    def describe(self) -> str:
        parts = []
        if self.other_cpu_share is not None:
            parts.append(f"other processes used {self.other_cpu_share:.0%} of the machine's CPU")
        if self.steal_share is not None and self.steal_share >= 0.01:
            parts.append(f"CPU steal {self.steal_share:.0%}")
        if self.ray_idle_share is not None and self.ray_idle_share >= 0.01:
            parts.append(f"Ray's idle processes {self.ray_idle_share:.0%} (not counted as other processes)")
        return " and ".join(parts) + f" during the {self.wall_s:.1f} s timing window"


def _machine_busy_s() -> tuple[float, float, int] | None:
    """(busy CPU seconds of every core, steal seconds, logical cores), or None."""
    try:
        import psutil

        times = psutil.cpu_times()
    except Exception:  # noqa: BLE001 - no counters on this platform: the figure is simply missing
        return None
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    # guest time is already counted in user time on Linux; do not count it twice
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    steal = getattr(times, "steal", 0.0)
    return total - idle - guest - steal, steal, psutil.cpu_count() or 1


def _own_cpu_s() -> float | None:
    try:
        import psutil

        times = psutil.Process().cpu_times()
    except Exception:  # noqa: BLE001 - see _machine_busy_s
        return None
    return times.user + times.system


def _idle_ray_cpu_s() -> dict[tuple[int, float], float] | None:
    """{(pid, start time): CPU seconds} of the idle Ray processes on this machine other than this
    one, or None when they cannot be read."""
    try:
        import psutil

        me, found = os.getpid(), {}
        for process in psutil.process_iter(["name"]):  # the name alone first: most processes end here
            name = process.info["name"] or ""
            if process.pid == me:
                continue
            try:
                # a Python daemon is told by its script: read the command line of Python processes only
                cmdline = process.cmdline() if name.startswith("python") else None
                if not is_idle_ray_process(name, cmdline):
                    continue
                with process.oneshot():
                    times = process.cpu_times()
                    found[(process.pid, process.create_time())] = times.user + times.system
            except psutil.Error:  # it ended, or is not ours to read: not counted as Ray's
                continue
        return found
    except Exception:  # noqa: BLE001 - no process table here: nothing is left out of "other"
        return None


def idle_ray_seconds(before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]) -> float:
    """CPU seconds the processes idle at both readings used between them (a process that started,
    ended or took a task in between is not counted here, so it stays in "other")."""
    return sum(max(after[key] - before[key], 0.0) for key in after.keys() & before.keys())


@dataclass(frozen=True)
class Reading:
    """The counters at one instant: wall clock, machine (busy s, steal s, cores), this process's CPU
    seconds, and the idle Ray processes' CPU seconds (None: not looked for, or unreadable)."""

    wall: float
    machine: tuple[float, float, int] | None
    own: float | None
    ray_idle: dict[tuple[int, float], float] | None = None

    @classmethod
    def now(cls, ray: bool) -> "Reading":
        # the process scan first: at a window's start it then stays outside the window, at its end it is
        # this process's own CPU, which is subtracted
        ray_idle = _idle_ray_cpu_s() if ray else None
        return cls(time.monotonic(), _machine_busy_s(), _own_cpu_s(), ray_idle)


def busy_between(before: Reading, after: Reading) -> Busy:
    """What the rest of the machine did between two readings: the machine's busy CPU less ours, less
    the idle Ray processes' (at most RAY_IDLE_ALLOWANCE_CORES), as a share of all cores."""
    wall = after.wall - before.wall
    if before.machine is None or after.machine is None or wall <= 0:
        return Busy(None, None, wall)
    capacity = wall * after.machine[2]
    steal = min(max(0.0, after.machine[1] - before.machine[1]) / capacity, 1.0)
    if before.own is None or after.own is None:
        return Busy(None, steal, wall)
    other = (after.machine[0] - before.machine[0]) - (after.own - before.own)
    ray_share = None
    if before.ray_idle is not None and after.ray_idle is not None:
        ray_s = idle_ray_seconds(before.ray_idle, after.ray_idle)
        ray_share = min(ray_s / capacity, 1.0)
        other -= min(ray_s, RAY_IDLE_ALLOWANCE_CORES * wall)
    return Busy(min(max(other / capacity, 0.0), 1.0), steal, wall, ray_share)


@dataclass(frozen=True)
class BusyWindow:
    """A started window; `stop()` returns the Busy figures since `start()`. `ray`: whether idle Ray
    processes are left out (None: when this process has imported Ray, see the module docstring)."""

    started: Reading

    @classmethod
    def start(cls, ray: bool | None = None) -> "BusyWindow":
        return cls(Reading.now(_ray_loaded() if ray is None else ray))

    def stop(self) -> Busy:
        return busy_between(self.started, Reading.now(self.started.ray_idle is not None))
