"""The one renderer of every bench: benches measure and hand back tables (tidy DataFrames) and
targets; this module prints them for a reader and writes them as JSON (`--json PATH`).

A bench's `main` wires the two: measuring functions yield rows or return frames, and a `Renderer`
prints each table (row by row as rows arrive, so a long bench shows progress), the context
lines and the targets' sentences, and keeps everything it printed as data. Progress lines
("bids: candidate [ok] 1.2s") are printed but not kept: they are not figures.

The targets table has one row per target: `target` (what is compared), `figure` (the measured
value, None when not available), `met` (True, False, or None when not judged: smoke settings,
a missing figure), `command` (the bench command that measures it) and `sentence` (what the
reader gets, unchanged from the bench's printed line).
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

TARGET_COLUMNS = ("target", "figure", "met", "command", "sentence")


def missing(value: Any) -> bool:
    """None, NaN and pandas' missing markers: a cell the reader sees as `missing`."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Col:
    """One fixed-width column of a printed table: the frame's column `name`, its `header`, the
    alignment and width, a format spec for the value (`spec`, e.g. ".4f" or ","), or a function
    of the whole row (`text`) for a cell made of several fields; `before` separates it from the
    previous column."""

    name: str
    header: str
    width: int
    align: str = ">"
    spec: str = ""
    before: str = ""
    missing: str = "-"
    text: Callable[[Mapping[str, Any]], str] | None = None

    def head(self) -> str:
        return f"{self.before}{self.header:{self.align}{self.width}}"

    def cell(self, row: Mapping[str, Any]) -> str:
        if self.text is not None:
            shown = self.text(row)
        else:
            value = row.get(self.name)
            shown = self.missing if missing(value) else format(value, self.spec)
        return f"{self.before}{shown:{self.align}{self.width}}"


@dataclass(frozen=True)
class Layout:
    """A fixed-width table: its columns, an indent, and whether the header line is printed."""

    columns: tuple[Col, ...]
    indent: str = ""
    header: bool = True

    def head(self) -> str:
        return self.indent + "".join(c.head() for c in self.columns)

    def line(self, row: Mapping[str, Any]) -> str:
        return self.indent + "".join(c.cell(row) for c in self.columns)


def target(target: str, figure: float | None, met: bool | None, command: str, sentence: str) -> dict[str, Any]:
    """One row of a targets table (see the module's docstring); a non-finite figure becomes None."""
    if figure is not None and not (isinstance(figure, (int, float)) and math.isfinite(figure)):
        figure = None
    return {"target": target, "figure": figure, "met": met, "command": command, "sentence": sentence}


def targets_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(TARGET_COLUMNS))


def times(value: Any, digits: int = 2) -> str:
    """A ratio as "1.23x", or "n/a" when it was not measured (never "nanx")."""
    return "n/a" if missing(value) else f"{value:.{digits}f}x"


def verdict(met: bool | None, yes: str = "MET", no: str = "MISSED", unjudged: str = "n/a") -> str:
    return unjudged if met is None else (yes if met else no)


def _plain(value: Any) -> Any:
    """A JSON-safe value: numpy scalars as Python numbers, NaN and inf as None (never printed as nan), a
    frame inside a row (a search's curve) as its records rather than its printed text."""
    if isinstance(value, pd.DataFrame):
        return records(value)
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


@dataclass
class Renderer:
    """Prints a bench's tables, lines and targets to `out` and keeps them for `write_json`."""

    bench: str
    command: str = ""
    out: TextIO | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    target_rows: list[dict[str, Any]] = field(default_factory=list)

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def say(self, text: str) -> None:
        """A context line or a sentence: printed and kept."""
        self.lines.append(text)
        self._print(text)

    def blank(self) -> None:
        """An empty line between sections: printed, not kept."""
        self._print("")

    def progress(self, text: str) -> None:
        """A progress line: printed, not kept."""
        self._print(text)

    def table(self, name: str, layout: Layout, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Prints `rows` under `layout` as they arrive; returns (and keeps) them as a frame."""
        if layout.header:
            self._print(layout.head())
        kept = []
        for row in rows:
            kept.append(dict(row))
            self._print(layout.line(row))
        frame = self.tables[name] = pd.DataFrame(kept)
        return frame

    def frame(self, name: str, frame: pd.DataFrame, drop: Iterable[str] = (), **to_string: Any) -> None:
        """A whole frame as pandas prints it (wide, every row), `drop` columns left out of the print."""
        self.tables[name] = frame
        shown = frame.drop(columns=[c for c in drop if c in frame.columns])
        with pd.option_context("display.max_rows", 200, "display.width", 250, "display.max_colwidth", 60):
            self._print(shown.to_string(index=False, **{"na_rep": "n/a", **to_string}))

    def keep(self, name: str, frame: pd.DataFrame) -> None:
        """A table for the JSON only (raw rows behind a printed summary)."""
        self.tables[name] = frame

    def targets(self, rows: Iterable[Mapping[str, Any]], indent: str = "") -> pd.DataFrame:
        """Prints each target's sentence and keeps the rows as the targets table."""
        for row in rows:
            self.target_rows.append(dict(row))
            self._print(indent + row["sentence"])
        return targets_frame(self.target_rows)

    def candidates(self, context: str, rows: list[Mapping[str, Any]], table: pd.DataFrame,
                   targets: Iterable[Mapping[str, Any]]) -> None:
        """The closing section of a bench that compares candidates side by side: the context line
        (machine, threads, versions), the raw rows (kept for the JSON only), the candidates table
        without its `error` column, the errors (dataset, candidate, message) when any, and the
        targets' sentences. One method so that every such bench reads the same way."""
        self.say(context)
        self.keep("rows", pd.DataFrame(rows))
        self.frame("candidates", table, drop=["error"])
        errors = table[table["status"] == "error"]
        if len(errors):
            self.say("\nerrors:\n" + errors[["dataset", "candidate", "error"]].to_string(index=False))
        self.say("\ntargets (ratios from the same run; others share these cores, so expect noise):")
        self.targets(targets, indent="  ")

    def to_dict(self) -> dict[str, Any]:
        return {"bench": self.bench, "command": self.command, "lines": list(self.lines),
                "tables": {name: records(frame) for name, frame in self.tables.items()},
                "targets": records(targets_frame(self.target_rows))}

    def write_json(self, path: str | Path | None) -> None:
        if path:
            Path(path).write_text(json.dumps(self.to_dict(), indent=1, default=str))
