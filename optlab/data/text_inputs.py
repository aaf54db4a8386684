"""An analyst's texts: a CSV with a text column (and optionally a label column), checked before
any work, and tokenized into one batch of arrays by a tokenizer the caller brings.

    table = read_text_csv("texts.csv", "text", label_column="label")
    batch, facts = encode_texts(tokenizer, table.texts, max_length=128)

Every cell is read as a string (`keep_default_na=False`): a text such as "NA" or "null" stays
text, and an empty cell is an empty text, which is refused with its line numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optlab.data.datasets import Batch

# pandas is imported on use: only reading a CSV or parquet of texts needs it.

PADDINGS = ("longest", "max_length")
SHOWN = 5  # line numbers or values quoted in an error message


@dataclass(frozen=True)
class TextTable:
    """The texts of a CSV and, if a label column was named, its raw label values (strings)."""

    texts: tuple[str, ...]
    labels: tuple[str, ...] | None
    source: str
    text_column: str
    label_column: str | None = None

    def __len__(self) -> int:
        return len(self.texts)


def _lines(index: np.ndarray) -> str:
    """CSV line numbers (the header is line 1) of the first few rows in `index`."""
    shown = ", ".join(str(int(i) + 2) for i in index[:SHOWN])
    return shown + (f" and {len(index) - SHOWN} more" if len(index) > SHOWN else "")


def read_text_csv(path: str | Path, text_column: str, label_column: str | None = None) -> TextTable:
    """Read `path`, refusing (one line each) a missing file, an unreadable or empty CSV, a column
    that is not there (the message lists the columns), empty texts and empty labels."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give a CSV with a column of texts")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; give a CSV with a header row and one text per row") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable CSV ({' '.join(str(error).split())}); save it as UTF-8 "
                         f"comma-separated values with a header row") from None
    return text_table(frame, text_column, label_column, source=str(path))


def text_table(frame: Any, text_column: str, label_column: str | None = None, *, source: str = "the table"
               ) -> TextTable:
    """A pandas DataFrame (one row per text) as a checked TextTable."""
    columns = [str(c) for c in frame.columns]
    for flag, column in (("text_column", text_column), ("label_column", label_column)):
        if column is not None and column not in columns:
            raise ValueError(f"{source} has no column {column!r}; its columns are: {', '.join(map(repr, columns))}; "
                             f"name one of them as the {flag.replace('_', ' ')}")
    if label_column is not None and label_column == text_column:
        raise ValueError(f"the label column and the text column are both {text_column!r}; name two columns")
    if len(frame) == 0:
        raise ValueError(f"{source} has a header but no rows; give at least one text per row")
    texts = frame[text_column].astype(str).to_numpy()
    empty = np.flatnonzero(np.char.strip(texts.astype(str)) == "")
    if len(empty):
        raise ValueError(f"{source}: {len(empty)} of {len(texts)} texts in column {text_column!r} are empty (CSV "
                         f"lines {_lines(empty)}); fill or drop those rows")
    labels = None
    if label_column is not None:
        values = frame[label_column].astype(str).str.strip().to_numpy()
        blank = np.flatnonzero(values == "")
        if len(blank):
            raise ValueError(f"{source}: {len(blank)} of {len(values)} labels in column {label_column!r} are empty "
                             f"(CSV lines {_lines(blank)}); label every row or leave the label column out")
        labels = tuple(str(v) for v in values)
    return TextTable(tuple(str(t) for t in texts), labels, source, text_column, label_column)


def encode_texts(tokenizer: Any, texts: list[str] | tuple[str, ...], *, max_length: int,
                 padding: str = "longest") -> tuple[Batch, dict[str, Any]]:
    """Token arrays (int64, N x width) from a Hugging Face tokenizer: `longest` pads every row
    to the longest text (capped at `max_length`; a batch can then be trimmed to its own longest
    row), `max_length` pads every row to `max_length`. Texts longer than `max_length` tokens are
    cut at the tail; how many is in the facts, with the token lengths."""
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}; choose one of {PADDINGS}")
    texts = [str(t) for t in texts]
    full = tokenizer(texts, truncation=False, verbose=False)["input_ids"]
    lengths = np.array([len(ids) for ids in full], dtype=np.int64)
    encoded = tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="np")
    batch = {name: np.ascontiguousarray(encoded[name], dtype=np.int64) for name in tokenizer.model_input_names
             if name in encoded}
    truncated = int((lengths > max_length).sum())
    facts = {"padding": padding, "max_length": int(max_length), "width": int(batch["input_ids"].shape[1]),
             "tokens_p50": float(np.median(lengths)), "tokens_max": int(lengths.max()), "truncated_rows": truncated}
    return batch, facts
