"""Stop a call that runs past a study's time limit: SIGALRM turned into KeyboardInterrupt.

A time limit is kept softly between candidates and inside measurements (they check the
deadline), but applying a recipe or evaluating a slow model can run long without looking
at the clock. `HardStop.armed(at)` raises KeyboardInterrupt in the main thread at the
`time.monotonic()` instant `at`, so the study handles it exactly like Ctrl-C (what
finished is stored, the rest is named), and `fired` tells the two apart. The previous
SIGALRM handler and timer are restored on exit. Only in the main thread on POSIX;
elsewhere `armed` does nothing and the soft checks alone keep the limit. Both handlers run on the
thread's alternate signal stack, which OpenVINO can leave unmapped: it is repaired first
(`optlab.models.signal_stack`), or the signal would kill the process with SIGSEGV.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

from optlab.models import signal_stack


class HardStop:
    """A one-shot alarm; `fired` is True once it interrupted something."""

    def __init__(self) -> None:
        self.fired = False
        self._armed = False

    @staticmethod
    def available() -> bool:
        return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()

    @contextlib.contextmanager
    def armed(self, at: float | None) -> Iterator["HardStop"]:
        self.fired = False
        if at is None or not self.available():
            yield self
            return

        def on_alarm(signum, frame):
            if self._armed:  # a late signal after the block ended is ignored
                self._armed = False
                self.fired = True
                raise KeyboardInterrupt("optlab: the study's time limit was reached")

        signal_stack.repair()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(at - time.monotonic(), 0.01))
        self._armed = True
        try:
            yield self
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def ctrl_c_remembered() -> Iterator[dict[str, bool]]:
    """While inside, Ctrl-C (SIGINT) is remembered in the yielded dict (`["requested"]`) and then
    handled as before (KeyboardInterrupt by default). The study checks the flag between
    candidates: a KeyboardInterrupt that lands in a library's destructor or callback is swallowed
    there ("Exception ignored in ..."), and without the flag the study would run on. Main thread
    only (elsewhere the flag stays False); the previous handler is restored on exit."""
    state = {"requested": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):  # Ctrl-C is ignored on purpose (or not ours to manage)
        yield state
        return

    def on_sigint(signum, frame):
        state["requested"] = True
        if callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL: Python's own behaviour, as an exception the study can handle
            raise KeyboardInterrupt

    signal_stack.repair()
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
