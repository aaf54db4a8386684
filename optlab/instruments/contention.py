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
"""
from __future__ import annotations

import time
from dataclasses import dataclass

# psutil is imported on use: optional; without it the contention figure is not available, not an
# error.

# Shares of the whole machine (all logical cores) over the window.
BUSY_OTHER_THRESHOLD = 0.25  # other processes used more than a quarter of the machine
STEAL_THRESHOLD = 0.10  # the hypervisor took more than a tenth


@dataclass(frozen=True)
class Busy:
    """What the rest of the machine did during a window. Shares are of all logical cores
    (0 = idle apart from us, 1 = every core busy with others); None where unreadable."""

    other_cpu_share: float | None
    steal_share: float | None
    wall_s: float

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


@dataclass(frozen=True)
class BusyWindow:
    """A started window; `stop()` returns the Busy figures since `start()`."""

    started_wall: float
    machine: tuple[float, float, int] | None
    own: float | None

    @classmethod
    def start(cls) -> "BusyWindow":
        return cls(time.monotonic(), _machine_busy_s(), _own_cpu_s())

    def stop(self) -> Busy:
        wall = time.monotonic() - self.started_wall
        machine, own = _machine_busy_s(), _own_cpu_s()
        if self.machine is None or machine is None or wall <= 0:
            return Busy(None, None, wall)
        cores = machine[2]
        capacity = wall * cores
        steal = max(0.0, machine[1] - self.machine[1]) / capacity
        if own is None or self.own is None:
            return Busy(None, min(steal, 1.0), wall)
        other = (machine[0] - self.machine[0]) - (own - self.own)
        return Busy(min(max(other / capacity, 0.0), 1.0), min(steal, 1.0), wall)
