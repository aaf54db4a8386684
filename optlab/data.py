"""Offline datasets: digits (vision), bids (click-through) and intents (short text).

Every split is a `Split`: named input arrays (batch-first, the same names a model's
forward() and its ONNX graph take) plus labels. A *batch* everywhere in optlab is a
`dict[str, np.ndarray]`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

Batch = dict[str, np.ndarray]

DATASETS = ("digits", "bids", "intents")


@dataclass(frozen=True)
class Split:
    """One split: `inputs` maps input name -> array with the examples on axis 0."""

    inputs: Batch
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: np.ndarray | slice) -> "Split":
        return Split({k: v[index] for k, v in self.inputs.items()}, self.labels[index])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Consecutive batches of inputs (text is trimmed to the longest row in each batch)."""
        for start in range(0, len(self), batch_size):
            yield trim_padding({k: v[start:start + batch_size] for k, v in self.inputs.items()})


def trim_padding(batch: Batch) -> Batch:
    """Cut text batches to their longest real row, as a server with dynamic padding would."""
    mask = batch.get("attention_mask")
    if mask is None or mask.ndim != 2 or mask.shape[1] == 0:
        return batch
    longest = max(int(mask.sum(axis=1).max()), 1)
    return {k: (v[:, :longest] if v.ndim == 2 and v.shape[1] == mask.shape[1] else v) for k, v in batch.items()}


@dataclass
class Dataset:
    """A loaded dataset: four splits, realistic requests, optional slices and facts."""

    name: str
    task: str  # "multiclass" or "binary"
    num_classes: int
    train: Split
    validation: Split
    test: Split
    calibration: Split
    requests: list[Batch]  # a sample of realistic serving requests (real length and batch mix)
    slices: dict[str, np.ndarray] = field(default_factory=dict)  # slice name -> per-test-row group label
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. oracle_auc, vocab, seed, generator params
    fingerprint: str = ""  # content hash: changes when the data changes

    @property
    def input_names(self) -> list[str]:
        return list(self.test.inputs)


def load(name: str, *, smoke: bool = False, seed: int = 0) -> Dataset:
    """Load (generating and caching on first use) one of `DATASETS`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    raise NotImplementedError(name)
