"""Which machine measured a row: one label per machine, from the fingerprint every row carries.

A latency measured on a fast node and one measured on a slow node are not two candidates' speeds:
the difference is the machines'. A Study on Ray (`optlab.study.ray_executor`) can bring rows
from several machines into one table, so `recommend` and the explorer compare within one machine
unless asked otherwise, and label machines where there are several. This module is the one owner
of what "the same machine" means: the host that measured (`node`, set on rows measured through
the Ray executor), the CPU model, its speed flags and its physical cores. Two local Ray nodes on one
host are one machine (same hostname and hardware); rows measured in process carry no `node`, so they
group by hardware alone. The GPU is not part of it: a row's GPU columns are filled only when it was
measured on the GPU, so a study's CPU and CUDA candidates on one machine would otherwise read as two.

    machine_label(row)            # "node-a: AMD EPYC 7B13, 2 cores"
    machine_column(df)            # the label of every row (None where a row names no machine)
    machines(df)                  # {label: rows} of the rows that name one
"""
from __future__ import annotations

import hashlib
from typing import Any

MACHINE = "machine"  # the column the explorer adds when several machines are present
IDENTITY = ("node", "cpu_model", "cpu_flags", "cores")  # what tells two machines apart


def _word(value: Any) -> str | None:
    """The value as text, or None when it is missing (None, NaN, pandas' NA, empty)."""
    if value is None:
        return None
    try:
        if value != value:  # NaN
            return None
    except (TypeError, ValueError):  # pandas' NA
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a cores column read back as float
    text = str(value).strip()
    return text or None


def machine_key(row: dict) -> tuple[str | None, ...] | None:
    """The identity of the machine that measured `row`, or None when the row names no machine
    (no CPU model: a hand-made row, a row loaded without its environment)."""
    key = tuple(_word(row.get(name)) for name in IDENTITY)
    return key if key[1] else None


def machine_label(row: dict) -> str | None:
    """The machine of `row` in words: "host: CPU model, N cores" (the host only where the row names
    one), or None when the row names no machine."""
    key = machine_key(row)
    if key is None:
        return None
    node, cpu_model, _, cores = key
    words = f"{cpu_model}, {cores} cores" if cores else cpu_model
    return f"{node}: {words}" if node else words


def _labels(records: list[dict]) -> list[str | None]:
    """Each record's label; two machines that differ only in CPU flags (a VM that hides some)
    get the flags' short hash appended, so that one label never names two machines."""
    keys = [machine_key(r) for r in records]
    base = [machine_label(r) for r in records]
    by_label: dict[str, set] = {}
    for key, label in zip(keys, base, strict=True):
        if label is not None:
            by_label.setdefault(label, set()).add(key)
    out = []
    for key, label in zip(keys, base, strict=True):
        if label is not None and len(by_label[label]) > 1:
            flags = hashlib.sha256((key[2] or "").encode()).hexdigest()[:6]
            label = f"{label} (CPU flags {flags})"
        out.append(label)
    return out


def machine_column(df):
    """The machine label of every row of `df` (a pandas Series aligned with it; None where a row
    names no machine). The one place labels are made, so the explorer's column, `recommend`'s
    `machine=` and its refusal all use the same words."""
    import pandas as pd  # on use: the CLI imports the study layer at start

    return pd.Series(_labels(df.to_dict("records")), index=df.index, dtype="object")


def machines(df) -> dict[str, int]:
    """{label: number of rows} of the machines `df`'s rows were measured on, in order of first
    appearance (rows that name no machine are left out)."""
    counts: dict[str, int] = {}
    for label in machine_column(df):
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
    return counts


def describe(counts: dict[str, int]) -> str:
    """ "'A' (7 rows) and 'B' (6 rows)" for an error message or an explanation."""
    parts = [f"{label!r} ({n} row{'s' if n != 1 else ''})" for label, n in counts.items()]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)
