"""Stop a call that runs past a study's time limit: SIGALRM turned into KeyboardInterrupt.

A time limit is kept softly between candidates and inside measurements (they check the
deadline), but applying a recipe or evaluating a slow model can run long without looking
at the clock. `HardStop.armed(at)` raises KeyboardInterrupt in the main thread at the
`time.monotonic()` instant `at`, so the study handles it exactly like Ctrl-C (what
finished is stored, the rest is named), and `fired` tells the two apart. The previous
SIGALRM handler and timer are restored on exit. Only in the main thread on POSIX;
elsewhere `armed` does nothing and the soft checks alone keep the limit.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator


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

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(at - time.monotonic(), 0.01))
        self._armed = True
        try:
            yield self
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
