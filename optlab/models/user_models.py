"""Bring your own model: an analyst's ONNX file or torch module, with a sample of their
inputs, becomes a study's baseline Candidate and Dataset.

    baseline, data = from_onnx("my.onnx", "my_inputs.npz")                  # no labels: agreement
    baseline, data = from_onnx("my.onnx", x, labels=y, metric="accuracy")   # labels: the task metric
    study = Study(baseline, data, recipes)

The same inputs are the benchmark workload and, unless `calibration=` is given, the
calibration set for static quantization (with a warning: that flatters the result).
A model file is never unpickled: ONNX files are protobuf, torch modules come as objects.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optlab.data.datasets import Batch, Dataset, Split
from optlab.data.user_inputs import as_batch, load_labels, rows, take
from optlab.models.candidate import Candidate, OnnxModel
from optlab.models.onnx_signature import OnnxSignature, conform, read_signature

NAMED_METRICS = {"accuracy": "multiclass", "f1": "multiclass", "auc": "binary", "logloss": "binary"}
REQUEST_BATCH_SIZES = (1, 1, 1, 2, 4, 8, 16, 32)  # a realistic mix: mostly single requests


class CalibrationOnBenchmarkData(UserWarning):
    """Static quantization calibrated on the very inputs it is measured on looks better than it is."""


def onnx_candidate(path: str | Path, *, threads: int | None = None, name: str = "baseline",
                   signature: OnnxSignature | None = None) -> Candidate:
    """An ONNX file as the fp32 baseline, run by ONNX Runtime on CPU (all outputs, flattened)."""
    from optlab.models.runtimes import load_onnxruntime

    signature = signature or read_signature(path)
    options = {"threads": threads}
    predict = load_onnxruntime(signature.path, **options)
    return Candidate(name=name, predict_fn=predict, family="baseline", runtime="onnxruntime", device="cpu",
                     model=OnnxModel(signature.path, signature.input_names, signature.output_names),
                     artifact_path=signature.path, loader="optlab.models.runtimes:load_onnxruntime",
                     loader_options=options, meta={"signature": signature.describe()})


def from_onnx(path: str | Path, inputs: Any, *, labels: Any = None, metric: str | Callable | None = None,
              calibration: Any = None, threads: int | None = None, name: str = "user") -> tuple[Candidate, Dataset]:
    """Wrap an ONNX file and inputs (npz path, dict, ndarray, DataFrame or batch callable)."""
    signature = read_signature(path)
    batch = conform(as_batch(inputs, signature.input_names), signature)
    baseline = onnx_candidate(path, threads=threads, signature=signature)
    baseline.meta["output_widths"] = _onnx_output_widths(signature, take(batch, slice(0, 2)))
    calibration_batch = None
    if calibration is not None:
        calibration_batch = conform(as_batch(calibration, signature.input_names), signature)
    data = user_dataset(batch, baseline, labels=labels, metric=metric, calibration=calibration_batch,
                        output_names=signature.output_names, name=name)
    return baseline, data


def from_module(module: Any, inputs: Any, *, labels: Any = None, metric: str | Callable | None = None,
                calibration: Any = None, name: str = "user") -> tuple[Candidate, Dataset]:
    """Wrap a torch.nn.Module called as `module(**batch)`; every recipe applies to it."""
    import inspect

    from optlab.models import zoo

    if not hasattr(module, "state_dict") or not callable(module):
        raise TypeError(f"from_module needs a torch.nn.Module object (not a file: optlab never unpickles "
                        f"checkpoints); got {type(module).__name__}")
    names = [p for p in inspect.signature(module.forward).parameters if p not in ("self", "args", "kwargs")]
    batch = as_batch(inputs, names)
    missing = [n for n in names if n not in batch and
               inspect.signature(module.forward).parameters[n].default is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"the module's forward() needs {missing} but the inputs hold {sorted(batch)}; "
                         f"name the arrays after forward()'s arguments")
    baseline = zoo.baseline(module.eval())
    calibration_batch = as_batch(calibration, names) if calibration is not None else None
    data = user_dataset(batch, baseline, labels=labels, metric=metric, calibration=calibration_batch, name=name)
    return baseline, data


def user_dataset(inputs: Batch, baseline: Candidate, *, labels: Any = None, metric: str | Callable | None = None,
                 calibration: Batch | None = None, output_names=None, name: str = "user") -> Dataset:
    """A Dataset over the user's rows: they are the test split (quality), the requests
    (speed) and, without `calibration`, the calibration split."""
    n = rows(inputs)
    sample = baseline.predict(take(inputs, slice(0, min(n, 4))))
    widths = _output_widths(baseline, sample)
    names = list(output_names or [f"output{i}" for i in range(len(widths))])
    layout = [
        {"name": nm, "width": w, "kind": "scores" if w > 1 else "values"} for nm, w in zip(names, widths, strict=False)
    ]
    meta: dict[str, Any] = {"outputs": layout, "labelled": labels is not None, "source": "user"}
    if labels is not None and metric is None:
        raise ValueError("labels were given without a metric; pass metric='accuracy' | 'f1' | 'auc' | 'logloss' "
                         "or a callable metric(labels, outputs) -> float (higher is better)")
    if metric is not None and labels is None:
        raise ValueError(f"metric={metric!r} needs labels; pass labels=... (one per input row) or leave both out "
                         f"to compare outputs with the baseline's")
    label_array = load_labels(labels, n) if labels is not None else np.full(n, -1, dtype=np.int64)
    task, num_classes = "outputs", int(sum(widths))
    if isinstance(metric, str):
        if metric not in NAMED_METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(NAMED_METRICS)} or a callable "
                             f"metric(labels, outputs) -> float")
        if len(widths) != 1:
            raise ValueError(f"metric={metric!r} needs a single-output model, this one has {len(widths)} outputs "
                             f"{names}; pass a callable metric(labels, outputs) that picks the output")
        task = NAMED_METRICS[metric]
        num_classes = 2 if task == "binary" else widths[0]
        if task == "binary" and widths[0] != 1:
            raise ValueError(f"metric={metric!r} expects one click score per row but the model outputs "
                             f"{widths[0]} values; use metric='accuracy' for class scores")
        if task == "multiclass" and (label_array.min() < 0 or label_array.max() >= widths[0]):
            raise ValueError(f"labels range over [{label_array.min()}, {label_array.max()}] but the model scores "
                             f"{widths[0]} classes; labels must be class indices 0..{widths[0] - 1}")
    elif callable(metric):
        meta.update(metric_fn=metric, metric_name=getattr(metric, "__name__", "metric"))
    elif metric is not None:
        raise TypeError(f"metric must be a name or a callable; got {type(metric).__name__}")
    split = Split(inputs, label_array)
    if calibration is None:
        warnings.warn("no calibration set given: static quantization calibrates on the benchmark inputs, which "
                      "flatters its accuracy; pass calibration=... with other representative samples",
                      CalibrationOnBenchmarkData, stacklevel=3)
        calibration_split = split
    else:
        calibration_split = Split(calibration, np.full(rows(calibration), -1, dtype=np.int64))
    requests, start = [], 0
    for size in REQUEST_BATCH_SIZES * max(1, 64 // len(REQUEST_BATCH_SIZES)):
        if start >= n:
            start = 0
        requests.append(take(inputs, slice(start, start + size)))
        start += size
    from optlab.data.datasets import content_fingerprint
    from optlab.data.hashing import sha256_json

    dataset = Dataset(name=name, task=task, num_classes=num_classes, train=split, validation=split, test=split,
                      calibration=calibration_split, requests=requests, slices={}, meta=meta)
    # The arrays (calibration included) and the metric: a new callable metric changes every row's quality.
    dataset.fingerprint = sha256_json({"arrays": content_fingerprint(dataset),
                                       "metric": str(meta.get("metric_name", metric))})
    return dataset


def _onnx_output_widths(signature: OnnxSignature, sample: Batch) -> list[int]:
    """Width of each output once flattened per row (a model may have several outputs)."""
    from optlab.models.runtimes import ort_session

    outputs = ort_session(signature.path, threads=1).run(None, sample)
    return [int(np.prod(np.shape(o)[1:])) if np.ndim(o) > 1 else 1 for o in outputs]


def _output_widths(baseline: Candidate, sample: np.ndarray) -> list[int]:
    declared = baseline.meta.get("output_widths")
    if declared:
        return list(declared)
    return [int(np.prod(np.shape(sample)[1:])) if np.ndim(sample) > 1 else 1]

