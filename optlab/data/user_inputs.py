"""An analyst's inputs as optlab batches: numpy arrays, an .npz file, a pandas DataFrame,
or a callable that yields batches. The result is one `Batch` of all rows (dict of arrays)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from optlab.data.datasets import Batch


def as_batch(source: Any, input_names: Iterable[str] | None = None) -> Batch:
    """Collect `source` into one Batch.

    - a path to an `.npz` (keys are input names) or `.npy` (a single-input model);
    - a dict of arrays; a single ndarray (single-input models: named after the model's input);
    - a pandas DataFrame: one column per input, or, for a single-input model, all columns
      stacked as features;
    - a callable returning an iterable of batches (dicts), concatenated.
    """
    names = list(input_names or [])
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"inputs file not found: {path}; pass an .npz (one array per model input) "
                                    f"or .npy file")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                batch = {key: npz[key] for key in npz.files}
        elif path.suffix == ".npy":
            batch = _single(np.load(path, allow_pickle=False), names)
        else:
            raise ValueError(f"inputs file {path} has suffix {path.suffix!r}; use .npz (np.savez(path, "
                             f"input_name=array, ...)) or .npy")
    elif callable(source) and not isinstance(source, np.ndarray):
        batch = _concat([as_batch(b, names) for b in source()], where="the batches the callable yielded")
    elif isinstance(source, np.ndarray):
        batch = _single(source, names)
    elif _is_dataframe(source):
        batch = _from_frame(source, names)
    elif isinstance(source, Mapping):
        batch = {str(k): np.asarray(v) for k, v in source.items()}
    else:
        raise TypeError(f"cannot use {type(source).__name__} as inputs; give an .npz path, a dict of arrays, "
                        f"an ndarray, a DataFrame or a callable that yields dicts of arrays")
    _check_not_empty(batch)
    return batch


def _single(array: np.ndarray, names: list[str]) -> Batch:
    if len(names) > 1:
        raise ValueError(f"a single array was given but the model has {len(names)} inputs {names}; "
                         f"give a dict or an .npz with one array per input")
    return {names[0] if names else "input": np.asarray(array)}


def _is_dataframe(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns")


def _from_frame(frame, names: list[str]) -> Batch:
    columns = [str(c) for c in frame.columns]
    if names and set(names) <= set(columns):
        return {name: np.stack(frame[name].to_numpy()) if frame[name].dtype == object
                else frame[name].to_numpy() for name in names}
    if len(names) <= 1:
        return _single(frame.to_numpy(), names)
    raise ValueError(f"the DataFrame has columns {columns} but the model's inputs are {names}; "
                     f"name one column per input (array-valued cells allowed)")


def _concat(batches: list[Batch], where: str) -> Batch:
    if not batches:
        raise ValueError(f"no inputs: {where} were empty; yield at least one batch")
    keys = set(batches[0])
    for i, batch in enumerate(batches[1:], start=1):
        if set(batch) != keys:
            raise ValueError(f"batch {i} has inputs {sorted(batch)} but batch 0 has {sorted(keys)}")
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def _check_not_empty(batch: Batch) -> None:
    """Every array needs rows on its first axis; a scalar (rank 0) is allowed as a constant input
    (a sample rate) as long as some other array holds rows."""
    if not batch:
        raise ValueError("the inputs are empty (no arrays); save at least one array per model input")
    if all(np.ndim(array) == 0 for array in batch.values()):
        raise ValueError(f"every input is a scalar ({sorted(batch)}); at least one input needs rows on its "
                         f"first axis (one example per row)")
    for name, array in batch.items():
        if np.ndim(array) and array.shape[0] == 0:
            raise ValueError(f"input {name!r} has no rows (shape {list(array.shape)}); the first axis is the "
                             f"batch axis and needs at least one example")


def check_finite(batch: Batch, what: str = "input") -> None:
    """Refuse NaN or infinite values, naming each input and how many it holds: a model fed NaN
    fails (or silently outputs NaN) far from the cause."""
    problems = []
    for name, value in batch.items():
        array = np.asarray(value)
        if array.dtype.kind not in "fc":
            continue
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if nan or inf:
            problems.append(f"{what} {name!r} has {nan} NaN and {inf} infinite values (of {array.size})")
    if problems:
        raise ValueError("; ".join(problems) + "; clean or impute them before wrapping (e.g. np.nan_to_num, or "
                                               "drop those rows)")


def rows(batch: Batch) -> int:
    """Rows of a batch-first batch (its first array with a first axis)."""
    return int(next(np.shape(v)[0] for v in batch.values() if np.ndim(v)))


def take(batch: Batch, index) -> Batch:
    return {k: v[index] for k, v in batch.items()}


def load_labels(source: Any, n_rows: int) -> np.ndarray:
    """Labels from an array or a .npy/.npz file, checked against the number of input rows."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"labels file not found: {path}")
        loaded = np.load(path, allow_pickle=False)
        if hasattr(loaded, "files"):
            if len(loaded.files) != 1:
                raise ValueError(f"{path} holds {loaded.files}; save the labels as a single array (.npy)")
            loaded = loaded[loaded.files[0]]
        source = loaded
    labels = np.asarray(source)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"labels have shape {list(labels.shape)} but the inputs have {n_rows} rows; "
                         f"give one label per input row (a 1-D array of length {n_rows})")
    return labels


Yielder = Callable[[], Iterable[Batch]]
