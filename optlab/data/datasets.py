"""Offline datasets: digits (vision), bids (click-through) and intents (short text).

Every split is a `Split`: named input arrays (batch-first, the same names a model's
forward() and its ONNX graph take) plus labels. A *batch* everywhere in optlab is a
`dict[str, np.ndarray]`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from optlab.data import cache
from optlab.data.cache import cache_dir

# sklearn and tokenizers are imported inside the functions that use them: loading a dataset from its
# cache needs neither.

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


# Smoke: fewer train rows; test stays big enough to mean something (>= 2,000 rows) yet quick.
SMOKE_ROWS = {"digits": {"train": 3000}, "bids": {"train": 40_000, "validation": 10_000, "test": 20_000},
              "intents": {"train": 2000, "validation": 1000, "test": 2000}}
CALIBRATION_ROWS = {"digits": 512, "bids": 2048, "intents": 512}
# Serving request mix: batch sizes and their probabilities (bids: candidate ads per auction).
REQUEST_MIX = {"digits": ((1, 2, 4, 8, 16, 32, 64), (.35, .2, .15, .12, .1, .05, .03)),
               "bids": ((1, 8, 16, 32, 64, 128, 256), (.1, .15, .2, .2, .15, .12, .08)),
               "intents": ((1, 2, 4, 8, 16, 32), (.4, .2, .15, .12, .08, .05))}
N_REQUESTS = 200
INPUTS = {"digits": ("pixels",), "bids": ("categorical", "numeric"), "intents": ("input_ids", "attention_mask")}


def load(name: str, *, smoke: bool = False, seed: int = 0) -> Dataset:
    """Load (generating and caching on first use) one of `DATASETS`.

    Data is generated deterministically from `seed` into `cache_dir()` and verified by a
    sha256 sidecar on every load; a missing, truncated or altered file is rebuilt.
    `smoke=True` keeps fewer rows (for CI) from the same generated data.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    arrays, meta = cached_arrays(name, seed)
    splits = {}
    for split in ("train", "validation", "test"):
        n = len(arrays[f"{split}/labels"])
        keep = min(n, SMOKE_ROWS[name].get(split, n)) if smoke else n
        splits[split] = Split(
            {k: arrays[f"{split}/{k}"][:keep] for k in INPUTS[name]}, arrays[f"{split}/labels"][:keep]
        )
    rng = np.random.default_rng(seed + 7919)
    n_train_full = len(arrays["train/labels"])
    calibration_idx = np.sort(rng.permutation(n_train_full)[:CALIBRATION_ROWS[name]])
    calibration = Split({k: arrays[f"train/{k}"][calibration_idx] for k in INPUTS[name]},
                        arrays["train/labels"][calibration_idx])
    test = splits["test"]
    sizes, probs = REQUEST_MIX[name]
    requests = []
    for size in rng.choice(sizes, N_REQUESTS, p=probs):
        rows = np.sort(rng.choice(len(test), int(size), replace=False))
        requests.append(trim_padding({k: v[rows] for k, v in test.inputs.items()}))
    if name == "intents":
        meta["texts"] = {s: arrays[f"{s}/texts"][:len(splits[s])] for s in splits}
    meta = dict(meta, seed=seed, smoke=smoke, cache_file=str(data_path(name, seed)),
                request_batch_sizes={"sizes": list(sizes), "probabilities": list(probs)})
    slices = _SLICERS[name](test, arrays, meta)
    dataset = Dataset(name=name, task="binary" if name == "bids" else "multiclass",
                      num_classes=2 if name == "bids" else len(meta["classes"]),
                      train=splits["train"], validation=splits["validation"], test=test,
                      calibration=calibration, requests=requests, slices=slices, meta=meta)
    dataset.fingerprint = content_fingerprint(dataset)
    return dataset


def _digits_slices(test: Split, arrays: dict, meta: dict) -> dict[str, np.ndarray]:
    copy = arrays["test/copy"][:len(test)]
    return {"copy": np.where(copy == 0, "original", "augmented"), "digit": test.labels.astype(str)}


def _bids_slices(test: Split, arrays: dict, meta: dict) -> dict[str, np.ndarray]:
    from sklearn.metrics import roc_auc_score

    n = len(test)
    meta["oracle_auc"] = float(roc_auc_score(test.labels, arrays["test/p_true"][:n]))
    meta["test_p_true"] = arrays["test/p_true"][:n]
    meta["test_click_rate"] = float(test.labels.mean())
    publisher = test.inputs["categorical"][:, 0]
    counts = np.bincount(arrays["train/categorical"][:, 0], minlength=meta["cardinalities"][0])
    order = np.argsort(-counts, kind="stable")
    share = np.cumsum(counts[order]) / max(counts.sum(), 1)
    tier = np.empty(len(counts), dtype=object)
    tier[order] = np.where(share <= 0.5, "head", np.where(share <= 0.85, "torso", "tail"))
    devices = np.array(meta["devices"])
    return {"device": devices[test.inputs["categorical"][:, 3]], "publisher_frequency": tier[publisher].astype(str)}


def _intents_slices(test: Split, arrays: dict, meta: dict) -> dict[str, np.ndarray]:
    lengths = test.inputs["attention_mask"].sum(axis=1)
    return {"length": np.where(lengths <= 16, "short", np.where(lengths <= 64, "medium", "long"))}


_SLICERS = {"digits": _digits_slices, "bids": _bids_slices, "intents": _intents_slices}


def content_fingerprint(dataset: Dataset) -> str:
    """sha256 over every split's arrays (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(f"{dataset.name}|{dataset.task}|{dataset.num_classes}".encode())
    for split in ("train", "validation", "test", "calibration"):
        part = getattr(dataset, split)
        for key, value in sorted({**part.inputs, "labels": part.labels}.items()):
            arr = np.ascontiguousarray(value)
            h.update(f"{split}/{key}|{arr.dtype.str}|{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


# ---- generation and the on-disk cache -------------------------------------------------
def generator(name: str):
    """The generator module for a dataset: the top-level `datasets/<name>.py`, installed (wheel or
    editable) as the package `optlab.data.generators`, or read from the source checkout beside
    `optlab/` when the package runs uninstalled (PYTHONPATH pointing at a clone)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    try:
        return importlib.import_module(f"optlab.data.generators.{name}")
    except ModuleNotFoundError as error:
        if error.name not in ("optlab.data.generators", f"optlab.data.generators.{name}"):
            raise
    path = Path(__file__).resolve().parents[2] / "datasets" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"the {name!r} dataset generator is missing: optlab is neither installed "
                                f"(pip install optlab) nor run from its source checkout ({path} not found)")
    module_name = f"optlab.data.generators.{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def data_path(name: str, seed: int) -> Path:
    gen = generator(name)
    params = hashlib.sha256(json.dumps(gen.PARAMS, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return cache_dir("data") / f"{name}-v{gen.VERSION}-{params}-seed{seed}.npz"


def cached_arrays(name: str, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays ("split/field") and meta of a dataset, from the verified cache or generated now."""
    path = data_path(name, seed)
    tokenizer = path.with_suffix(".tokenizer.json")
    if cache.is_valid(path) and (name != "intents" or cache.is_valid(tokenizer)):
        arrays, meta = _read_npz(path)
    else:
        arrays, meta = generator(name).generate(seed)
        if name == "intents":
            gen = generator(name)
            cache.write_checked(tokenizer, lambda tmp: gen.train_tokenizer(arrays["train/texts"], tmp))
            for split in ("train", "validation", "test"):
                ids, mask = gen.encode(tokenizer, arrays[f"{split}/texts"], meta["params"]["max_length"])
                arrays[f"{split}/input_ids"], arrays[f"{split}/attention_mask"] = ids, mask
        cache.write_checked(path, lambda tmp: _write_npz(tmp, arrays, meta))
        arrays, meta = _read_npz(path)  # one code path: what is used is what was stored
    if name == "intents":
        from tokenizers import Tokenizer

        meta["tokenizer_path"] = str(tokenizer)
        meta["vocab_size"] = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
        meta["max_length"] = meta["params"]["max_length"]
    if name == "bids":
        numeric = arrays["train/numeric"].astype(np.float64)
        meta["numeric_mean"] = numeric.mean(axis=0).round(6).tolist()
        meta["numeric_std"] = numeric.std(axis=0).round(6).tolist()
    meta["generator"] = f"datasets/{name}.py v{generator(name).VERSION}"
    return arrays, meta


def _write_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """An .npz with fixed zip timestamps, so the same data gives the same bytes (and sha256)."""
    entries = dict(arrays)
    for key in [k for k, v in entries.items() if v.dtype == object]:  # texts: utf-8 bytes + offsets
        encoded = [str(t).encode() for t in entries.pop(key)]
        entries[key + ".utf8"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        entries[key + ".offsets"] = np.cumsum([0] + [len(e) for e in encoded]).astype(np.int64)
    entries["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key in sorted(entries):
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(entries[key]), allow_pickle=False)


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files}
    meta = json.loads(raw.pop("__meta__").tobytes().decode())
    arrays = {}
    for key, value in raw.items():
        if key.endswith(".utf8"):
            base = key[:-5]
            data, offsets = value.tobytes(), raw[base + ".offsets"]
            arrays[base] = np.array(
                [data[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:], strict=False)], dtype=object
            )
        elif not key.endswith(".offsets"):
            arrays[key] = value
    return arrays, meta
