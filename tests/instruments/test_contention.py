"""The busy-machine check: other processes count, Ray's idle daemons do not (no Ray started)."""
import subprocess
import sys
import time

import pytest

from optlab.instruments import contention
from optlab.instruments.contention import (
    RAY_IDLE_ALLOWANCE_CORES,
    BusyWindow,
    Reading,
    _idle_ray_cpu_s,
    busy_between,
    idle_ray_seconds,
    is_idle_ray_process,
)

RAY = "/venv/lib/python3.11/site-packages/ray/"


@pytest.mark.parametrize("name, cmdline", [
    ("raylet", [RAY + "core/src/ray/raylet/raylet", "--raylet_socket_name=/tmp/x"]),
    ("gcs_server", [RAY + "core/src/ray/gcs/gcs_server", "--log_dir=/tmp/x"]),
    ("python", ["/venv/bin/python", "-u", RAY + "_private/log_monitor.py", "--x"]),
    ("python", ["/venv/bin/python", "-u", RAY + "autoscaler/v2/monitor.py"]),
    ("python", ["/venv/bin/python", RAY + "dashboard/dashboard.py"]),
    ("ray::Dashboard", ["ray::DashboardAgent"]),  # comm keeps 15 characters; the title is whole
    ("ray::RuntimeEnv", ["ray::RuntimeEnvAgent"]),
    ("ray::IDLE", ["ray::IDLE", "", ""]),
    ("ray::IDLE_Spill", ["ray::IDLE_SpillWorker"]),
])
def test_rays_own_daemons_and_idle_workers_are_recognised(name, cmdline):
    assert is_idle_ray_process(name, cmdline)


@pytest.mark.parametrize("name, cmdline", [
    ("ray::_remote_ru", ["ray::_remote_run"]),  # a worker running a task is load
    ("python", ["python", "-m", "pytest", "tests/study/test_ray_executor.py"]),  # mentions ray, is not Ray's
    ("python", ["python", "train_raylet_model.py"]),
    ("bash", None),
    (None, []),
])
def test_other_processes_are_not(name, cmdline):
    assert not is_idle_ray_process(name, cmdline)


def reading(wall, busy_s, own_s, ray=None, cores=2):
    return Reading(wall, (busy_s, 0.0, cores), own_s, ray)


def test_idle_ray_cpu_is_left_out_of_other_up_to_the_allowance():
    # 10 s on 2 cores: the machine was busy 6 s, 1 s of it ours; idle Ray processes used 1 s
    before = reading(0.0, 0.0, 0.0, {(10, 1.0): 5.0, (11, 1.0): 2.0})
    after = reading(10.0, 6.0, 1.0, {(10, 1.0): 5.6, (11, 1.0): 2.4})
    busy = busy_between(before, after)
    assert busy.ray_idle_share == pytest.approx(1.0 / 20)
    assert busy.other_cpu_share == pytest.approx((5.0 - 1.0) / 20)  # within the allowance: all left out
    # daemons that burn 2 s in 1 s are not idle: beyond the allowance it counts as other
    hot = busy_between(reading(0.0, 0.0, 0.0, {(10, 1.0): 0.0}), reading(1.0, 2.0, 0.0, {(10, 1.0): 2.0}))
    assert hot.other_cpu_share == pytest.approx((2.0 - RAY_IDLE_ALLOWANCE_CORES) / 2) and hot.contended
    # not looked for (no Ray in this process): everything else counts, as before
    plain = busy_between(reading(0.0, 0.0, 0.0), reading(10.0, 6.0, 1.0))
    assert plain.ray_idle_share is None and plain.other_cpu_share == pytest.approx(5.0 / 20)


def test_a_process_that_started_ended_or_took_a_task_in_the_window_stays_load():
    before = {(10, 1.0): 5.0, (11, 1.0): 1.0}  # 11 ends (or runs a task) before the end
    after = {(10, 1.0): 5.5, (12, 9.0): 3.0, (10, 2.0): 7.0}  # 12 is new; pid 10 reused by another process
    assert idle_ray_seconds(before, after) == pytest.approx(0.5)


SPIN = "import sys, time\nopen('/proc/self/comm', 'w').write(sys.argv[1])\nprint('ready', flush=True)\n" \
       "end = time.time() + 30\nwhile time.time() < end:\n    pass\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process names are set through /proc (Linux)")
def test_the_scan_finds_a_process_titled_like_an_idle_ray_worker_and_not_others(monkeypatch):
    """Real processes (no Ray): one that names itself ray::IDLE, as Ray titles a waiting worker, and
    one named otherwise; both spin, so the window sees their CPU."""
    children = [subprocess.Popen([sys.executable, "-c", SPIN, title], stdout=subprocess.PIPE, text=True)
                for title in ("ray::IDLE", "not-ray")]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        found = _idle_ray_cpu_s()
        pids = {pid for pid, _ in found}
        assert children[0].pid in pids and children[1].pid not in pids
        window = BusyWindow.start(ray=True)
        time.sleep(0.5)
        busy = window.stop()
        assert busy.ray_idle_share is not None and busy.ray_idle_share > 0  # the ray::IDLE spinner's CPU
        monkeypatch.setattr(contention, "_ray_loaded", lambda: False)
        assert BusyWindow.start().started.ray_idle is None  # a process without Ray does not scan
        monkeypatch.setattr(contention, "_ray_loaded", lambda: True)
        assert children[0].pid in {pid for pid, _ in BusyWindow.start().started.ray_idle}
    finally:
        for child in children:
            child.kill()
            child.wait()
