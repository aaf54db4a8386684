"""Axes and point placement for optlab's charts: which values an axis spans, log or linear
(log by default for figures that spread over decades), titles and compact tick formats from
optlab.study.columns, and where to draw points that would hide each other.
Altair is imported inside the functions that build scales: `import optlab` stays free of it.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from optlab.study.columns import column
from optlab.study.columns import title as axis_title


def _tidy(data, keep: Iterable[str] = ()):
    """Without helper columns that hold nothing (all missing): they would only leak into tooltips."""
    empty = [c for c in data.columns if c not in keep and data[c].isna().all()]
    return data.drop(columns=empty)


def _finite(values, log: bool) -> np.ndarray:
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    numbers = numbers[np.isfinite(numbers)]
    return numbers[numbers > 0] if log else numbers


def _use_log(name: str, values, log: bool | None) -> bool:
    """Log by default for figures that spread over decades (latencies); never with a value <= 0."""
    found = column(name)
    want = bool(found and found.log) if log is None else log
    numbers = _finite(values, False)
    return bool(want and len(numbers) and (numbers > 0).all())


def _extent(values, log: bool) -> tuple[float, float] | None:
    """The span an axis shows, in data units: the values' range, or around a lone value
    (x/2 to 2x on a log axis, +-5% on a linear one) so a one-point chart has honest ticks."""
    numbers = _finite(values, log)
    if not len(numbers):
        return None
    low, high = float(numbers.min()), float(numbers.max())
    if low < high:
        return low, high
    if log:
        return low / 2, high * 2
    pad = abs(low) * 0.05 or 1.0
    # a lone value >= 0 (a rate of 0/s served, a size) gets no negative ticks ("-1 requests/s")
    return (max(low - pad, 0.0) if low >= 0 else low - pad), high + pad


def _scale(values, log: bool):
    import altair as alt

    options: dict[str, Any] = {"type": "log"} if log else {"zero": False}
    numbers = _finite(values, log)
    if len(numbers) and numbers.min() == numbers.max():
        return alt.Scale(domain=list(_extent(values, log)), **options)
    return alt.Scale(nice=True, **options)


def _position(channel: str, field: str, scale, title_text: str | None = None, name: str | None = None):
    """An x or y encoding with the Column table's title and compact tick format (ticks never collide)."""
    import altair as alt

    found = column(name or field)
    axis = alt.Axis(labelOverlap=True, format=found.axis) if found and found.axis else alt.Axis(labelOverlap=True)
    if getattr(scale, "type", None) == "log":
        axis.tickCount = 6  # a log axis otherwise labels every 2..9 of each decade
    encoding = alt.X if channel == "X" else alt.Y
    return encoding(f"{field}:Q", title=title_text or axis_title(name or field), scale=scale, axis=axis)


def _spread(data, x: str, y: str, log: bool, width: int, height: int, near_px: float = 12.0):
    """`x_drawn`/`y_drawn`: where to draw each point. Points closer than `near_px` on the chart
    are moved onto a small circle round their middle, so none hides another (3 px apart was
    invisible); the measured figures stay in x and y (the tooltip's)."""
    xs, ys = (_as_floats(data[c]) for c in (x, y))
    data = data.assign(x_drawn=xs, y_drawn=ys)
    ok = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if log else True)
    span_x, span_y = _extent(xs[ok], log), _extent(ys[ok], False)
    if ok.sum() < 2 or span_x is None or span_y is None:
        return data
    tx = np.log10(np.where(ok, xs, 1.0)) if log else xs
    lo_x, hi_x = (np.log10(span_x[0]), np.log10(span_x[1])) if log else span_x
    px = (tx - lo_x) / (hi_x - lo_x) * width
    py = (ys - span_y[0]) / (span_y[1] - span_y[0]) * height
    moved_x, moved_y = px.copy(), py.copy()
    for group in _clusters(px, py, ok, near_px):
        centre_x, centre_y = px[group].mean(), py[group].mean()
        for k, i in enumerate(group):
            angle = 2 * np.pi * k / len(group) + np.pi / 4
            moved_x[i] = centre_x + near_px * 0.8 * np.cos(angle)
            moved_y[i] = centre_y + near_px * 0.8 * np.sin(angle)
    back_x = moved_x / width * (hi_x - lo_x) + lo_x
    drawn_x = np.where(ok, 10 ** back_x if log else back_x, xs)
    drawn_y = np.where(ok, moved_y / height * (span_y[1] - span_y[0]) + span_y[0], ys)
    return data.assign(x_drawn=drawn_x, y_drawn=drawn_y)


def _as_floats(values) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _clusters(px, py, ok, near_px: float) -> list[list[int]]:
    """Groups of points (positions) that lie within `near_px` of another of the group."""
    left = [i for i in np.flatnonzero(ok)]
    groups = []
    while left:
        group, frontier = [left.pop(0)], 0
        while frontier < len(group):
            i = group[frontier]
            near = [j for j in left if np.hypot(px[i] - px[j], py[i] - py[j]) < near_px]
            group += near
            left = [j for j in left if j not in near]
            frontier += 1
        if len(group) > 1:
            groups.append(group)
    return groups
