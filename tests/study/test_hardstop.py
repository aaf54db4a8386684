"""HardStop: a call running past the limit is interrupted; the signal state is restored."""
import signal
import time

import pytest

from optlab.study.hardstop import HardStop


def test_a_sleeping_call_is_interrupted_and_the_handler_restored():
    before = signal.getsignal(signal.SIGALRM)
    stop = HardStop()
    finished = False
    with pytest.raises(KeyboardInterrupt, match="time limit"):
        with stop.armed(time.monotonic() + 0.2):
            time.sleep(30)
            finished = True
    assert stop.fired and not finished
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_not_armed_without_a_deadline_and_quiet_when_the_block_ends_first():
    stop = HardStop()
    with stop.armed(None):
        pass
    with stop.armed(time.monotonic() + 5):
        pass  # ends long before the alarm: the timer is cancelled
    assert not stop.fired and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
