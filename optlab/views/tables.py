"""A results table as a person reads it in a notebook: numbers rounded, and a figure that was
not measured (NaN) or could not be computed (inf) said in words, never printed as NaN or inf.

Every walkthrough's table goes through `readable`, so a new column or a new notebook gets the
same wording; the row's `status`/`error`/`note` columns say why a figure is missing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from optlab.study.columns import NOT_AVAILABLE, NOT_MEASURED, not_available

__all__ = ["NOT_AVAILABLE", "NOT_MEASURED", "readable"]


def readable(frame: pd.DataFrame, *, digits: int | None = 4, missing: str = NOT_MEASURED) -> pd.DataFrame:
    """`frame` rounded to `digits`, with a missing number read as `missing`, +-inf as "not
    available", and a missing word (an `error` column's None on a row that did not fail) blank.

    Returns a new DataFrame (the caller's numbers are untouched); a column with nothing missing
    keeps its dtype, so it still sorts and formats as numbers.
    """
    out = frame.round(digits) if digits is not None else frame.copy()
    for name in out.columns:
        values = out[name]
        infinite = _infinite(values)
        lacking = values.isna()
        if not (infinite.any() or lacking.any()):
            continue
        # the one rule of optlab.study.columns: a missing word is blank, a missing number a figure
        # not measured (`missing`), an infinite one not available
        figures, gaps = _numbers(values), lacking | infinite
        words = values.astype(object)
        words[gaps] = [not_available(v, missing, figure=figures) for v in values[gaps]]
        out[name] = words
    return out


def _numbers(values: pd.Series) -> bool:
    """Whether a column holds figures (numbers, possibly all missing) rather than words."""
    if pd.api.types.is_numeric_dtype(values):
        return True
    present = values.dropna()
    return len(present) > 0 and all(isinstance(v, (int, float, np.number)) for v in present)


def _infinite(values: pd.Series) -> pd.Series:
    """Where a column holds +-inf (numbers only: words and flags are never infinite)."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.Series(False, index=values.index)
    return pd.Series(np.isinf(values.to_numpy(dtype=float)), index=values.index)
