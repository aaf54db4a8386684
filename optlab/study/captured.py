"""Keep dependencies' chatter out of the terminal: capture it per candidate, count it, de-duplicate it.

Quantizers and runtimes warn a lot (ONNX Runtime printed 69 and 109 lines for two real
models, over the progress bar). While one candidate is produced, `capture()` records:

- Python warnings (`warnings.warn`), under the filters in force;
- logging records that would have been printed (root's and stream handlers' levels apply);
- C-level lines written to file descriptor 2 (ONNX Runtime's C++ logger, native libraries).

`Captured.summary()` folds them into kinds (numbers and quoted names replaced, so "bias
'a' ..." and "bias 'b' ..." are one kind) with counts, for the row's notes. With
`verbose=True` nothing is captured: everything prints as usual.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

MAX_KINDS_IN_NOTES = 5
MAX_LINE_CHARS = 160
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.]+\s*")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\b0x[0-9a-fA-F]+\b|\d+(\.\d+)?")


@dataclass
class Captured:
    """Everything captured while one candidate ran: (source, text) per line."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.lines)

    def kinds(self) -> list[tuple[str, int]]:
        """(first example, count) per kind of line, most frequent first."""
        counts: Counter[str] = Counter()
        example: dict[str, str] = {}
        for source, text in self.lines:
            key = source + " " + _NUMBER.sub("N", _QUOTED.sub("'…'", text))
            counts[key] += 1
            example.setdefault(key, f"[{source}] {text}")
        return [(example[key], n) for key, n in counts.most_common()]

    def summary(self) -> str:
        """One notes entry: 'captured 69 warning lines (3 kinds): [onnxruntime] ... (x64); ...'."""
        if not self.lines:
            return ""
        kinds = self.kinds()
        shown = "; ".join(f"{_short(text)} (x{n})" if n > 1 else _short(text)
                          for text, n in kinds[:MAX_KINDS_IN_NOTES])
        more = f"; and {len(kinds) - MAX_KINDS_IN_NOTES} more kinds" if len(kinds) > MAX_KINDS_IN_NOTES else ""
        return f"captured {self.count} warning line(s) from dependencies ({len(kinds)} kind(s)): {shown}{more}"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS - 1] + "…"


class _Collector(logging.Handler):
    def __init__(self, captured: Captured, level: int = logging.WARNING):
        super().__init__(level)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break the study
            message = str(record.msg)
        self.captured.lines.append((record.name or "logging", message))


def _is_console(handler: logging.Handler) -> bool:
    if type(handler) is not logging.StreamHandler:  # FileHandler and friends keep writing their files
        return False
    stream = getattr(handler, "stream", None)
    return stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)


@contextlib.contextmanager
def _logging_captured(captured: Captured) -> Iterator[None]:
    root = logging.getLogger()
    swapped: list[tuple[logging.Logger, list[logging.Handler]]] = []
    loggers = [root] + [obj for obj in logging.Logger.manager.loggerDict.values() if isinstance(obj, logging.Logger)]
    for logger in loggers:
        if not logger.handlers and logger is not root:
            continue
        replaced = [(_Collector(captured, handler.level) if _is_console(handler) else handler)
                    for handler in logger.handlers]
        if logger is root and not any(isinstance(h, _Collector) for h in replaced):
            replaced.append(_Collector(captured))  # records reaching the root are captured even beside
            # other (file, notebook, test) handlers, which keep receiving them
        if replaced != logger.handlers:
            swapped.append((logger, logger.handlers))
            logger.handlers = replaced
    last_resort = logging.lastResort
    logging.lastResort = _Collector(captured)
    try:
        yield
    finally:
        logging.lastResort = last_resort
        for logger, handlers in swapped:
            logger.handlers = handlers


@contextlib.contextmanager
def _fd2_captured(captured: Captured) -> Iterator[None]:
    """Point file descriptor 2 at a temp file for the block (native libraries write there)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for raw in sink.read().decode("utf-8", errors="replace").splitlines():
                text = _TIMESTAMP.sub("", raw.strip())
                if text:
                    source = "onnxruntime" if "onnxruntime" in text[:60] else "stderr"
                    captured.lines.append((source, text))


@contextlib.contextmanager
def capture(verbose: bool = False) -> Iterator[Captured]:
    """Capture warnings, log records and fd-2 lines for the block (nothing when verbose)."""
    captured = Captured()
    if verbose:
        yield captured
        return
    with warnings.catch_warnings(record=True) as records, _logging_captured(captured), _fd2_captured(captured):
        try:
            yield captured
        finally:
            for record in records:
                captured.lines.append((record.category.__name__, str(record.message)))
