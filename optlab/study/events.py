"""What a Study tells its subscribers: one `StudyEvent` per finished (or loaded, or newly
joined) row, carrying those rows, sent through `Subscribers`.

A subscriber (a live chart, the explorer, a log) reads the rows the event announces; it needs
not pull `study.results` back. `event.results` is still there for a view that redraws the whole
table: the table as it was when the event was sent, built only if read.
"""
from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterator

from optlab.study.table import Pricing, results_table


@dataclass(frozen=True)
class StudyEvent:
    """Sent to subscribers once per finished candidate (and per row loaded from the store, as a
    reference, or given serving figures). `rows` are the rows it announces, priced and joined as
    in `results` (`row` is the last of them); `results` is the study's table as it was when the
    event was sent, built only if read."""

    rows: tuple[dict[str, Any], ...]
    done: int
    total: int
    cached: bool
    snapshot: tuple[tuple[dict[str, Any], ...], Pricing, Any] = field(repr=False, compare=False)

    @property
    def row(self) -> dict[str, Any]:
        return self.rows[-1] if self.rows else {}

    @cached_property
    def results(self):  # a pandas.DataFrame
        rows, pricing, extra = self.snapshot
        return results_table(rows, pricing, extra)

    @property
    def status(self) -> str:
        return self.row.get("status", "")

    @property
    def candidate(self) -> str:
        return self.row.get("candidate", "")


class Subscribers:
    """A study's listeners. A callback that raises never stops the study: its error is kept in
    `errors` (with the traceback) and warned about once per callback, not once per row."""

    def __init__(self):
        self.callbacks: list[Callable[[StudyEvent], Any]] = []
        self.errors: list[str] = []
        self._warned: set[int] = set()

    def add(self, callback: Callable[[StudyEvent], Any]) -> Callable[[], None]:
        """Follow the study; returns the function that stops following."""
        if not callable(callback):
            raise TypeError("subscribe() needs a callable taking one StudyEvent")
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback) if callback in self.callbacks else None

    def send(self, event: StudyEvent) -> None:
        for callback in list(self.callbacks):
            try:
                callback(event)
            except Exception as error:  # noqa: BLE001 - a broken widget must not kill the study
                message = f"{getattr(callback, '__name__', callback)!s}: {type(error).__name__}: {error}"
                self.errors.append(message + "\n" + traceback.format_exc())
                if id(callback) not in self._warned:
                    self._warned.add(id(callback))
                    warnings.warn(f"optlab: a study subscriber raised (ignored; the study goes on; all errors "
                                  f"are in study.callback_errors): {message}", RuntimeWarning, stacklevel=4)

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def __contains__(self, callback: object) -> bool:
        return callback in self.callbacks

    def __iter__(self) -> Iterator[Callable[[StudyEvent], Any]]:
        return iter(self.callbacks)
