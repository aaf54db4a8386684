"""Bring your own model: an analyst's ONNX file or torch module, with a sample of their
inputs, becomes a study's baseline Candidate and Dataset.

    baseline, data = from_onnx("my.onnx", "my_inputs.npz")                  # no labels: agreement
    baseline, data = from_onnx("my.onnx", x, labels=y, metric="accuracy")   # labels: the task metric
    study = Study(baseline, data, recipes)

The same inputs are the benchmark workload and, unless `calibration=` is given, the
calibration set for static quantization (with a warning: that flatters the result).
A model file is never unpickled: ONNX files are protobuf, torch modules come as objects.

Checked when wrapped, before any work: NaN/inf inputs (named, counted), labels that are not
class indices for a class metric, each output's kind (class scores, sequences of class scores,
dense maps, values: see `OUTPUT_KINDS`; declare it with `output_kinds=` where the shape alone
is ambiguous), and each input's batch axis (`batch_axes=`: a constant such as a sample rate is
`None`, a recurrent state batched on axis 1 is `1`; inferred where the graph leaves one answer).

Fine-tuning recipes (pruning with fine-tuning) never train on the rows quality is measured on:
`finetune_share=0.25` holds a quarter of the rows out for training (the test split is the
rest); without it they refuse with a message.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optlab.data.cache import cache_dir
from optlab.data.datasets import Batch, Dataset, Split, content_fingerprint
from optlab.data.hashing import sha256_file, sha256_json
from optlab.data.user_inputs import as_batch, check_finite, load_labels, rows, take
from optlab.models import wrap_checks, zoo
from optlab.models.candidate import Candidate, OnnxModel
from optlab.models.onnx_signature import (
    OnnxSignature,
    batch_first,
    conform,
    describe_axes,
    needs_adapter,
    observed_output_axes,
    read_signature,
    to_rows,
)
from optlab.models.onnx_signature import batch_axes as infer_batch_axes
from optlab.models.output_checks import DegenerateSample, degenerate_outputs
from optlab.models.output_checks import describe as describe_degenerate

# the output kinds are re-exported: a user model's caller finds everything about it in this module
from optlab.models.output_kinds import CLASS_WORDS as CLASS_WORDS
from optlab.models.output_kinds import OUTPUT_KINDS as OUTPUT_KINDS
from optlab.models.output_kinds import VALUE_WORDS as VALUE_WORDS
from optlab.models.output_kinds import AmbiguousOutput as AmbiguousOutput
from optlab.models.output_kinds import output_layout
from optlab.models.runtimes import load_onnxruntime, ort_session
from optlab.models.user_labels import (  # noqa: F401 - re-exported: callers import them from here
    _check_metric_and_labels,
    _metric_task,
    class_labels,
    regression_labels,
)

REQUEST_BATCH_SIZES = (1, 1, 1, 2, 4, 8, 16, 32)  # a realistic mix: mostly single requests
SEED = 0


class CalibrationOnBenchmarkData(UserWarning):
    """Static quantization calibrated on the very inputs it is measured on looks better than it is."""


def onnx_candidate(path: str | Path, *, threads: int | None = None, name: str = "baseline",
                   signature: OnnxSignature | None = None) -> Candidate:
    """An ONNX file as the fp32 baseline, run by ONNX Runtime on CPU (all outputs, flattened)."""
    signature = signature or read_signature(path)
    options = {"threads": threads}
    predict = load_onnxruntime(signature.path, **options)
    return Candidate(name=name, predict_fn=predict, family="baseline", runtime="onnxruntime", device="cpu",
                     model=OnnxModel(signature.path, signature.input_names, signature.output_names),
                     artifact_path=signature.path, loader="optlab.models.runtimes:load_onnxruntime",
                     loader_options=options, meta={"signature": signature.describe()})


def from_onnx(path: str | Path, inputs: Any, *, labels: Any = None, metric: str | Callable | None = None,
              calibration: Any = None, threads: int | None = None, name: str = "user",
              batch_axes: dict[str, int | None] | None = None, output_kinds: dict[str, str] | None = None,
              finetune_share: float | None = None, deterministic: bool = True) -> tuple[Candidate, Dataset]:
    """Wrap an ONNX file and inputs (npz path, dict, ndarray, DataFrame or batch callable).

    `batch_axes` declares inputs not batched on axis 0 ({"state": 1}) and constants ({"sr": None});
    `output_kinds` declares how an output is compared ({"logits": "sequence"}, see OUTPUT_KINDS);
    `deterministic=False` accepts a baseline that disagrees with itself (see wrap_checks)."""
    original = signature = read_signature(path)
    raw = as_batch(inputs, signature.input_names)
    _refuse_fixed_batch_of_one(signature, raw, batch_axes)
    axes = infer_batch_axes(signature, raw, batch_axes) if set(raw) == set(signature.input_names) else {}
    conformed = conform(raw, signature, axes)
    batch = to_rows(conformed, axes)
    outputs, how = observed_output_axes(signature, conformed, axes, batch_axes)
    notes: list[str] = []
    if needs_adapter(axes, outputs):
        signature, notes = _batch_first_signature(signature, axes, outputs)
        notes.append(describe_axes(axes, outputs, how))
    check_finite(batch)
    plan = wrap_checks.plan_memory(batch)  # before anything runs: refuse what would not fit
    baseline = onnx_candidate(signature.path, threads=threads, signature=signature)
    sample = take(batch, slice(0, min(2, plan.max_batch_rows)))
    baseline.meta["output_shapes"] = _onnx_output_shapes(signature, sample)
    baseline.meta["output_widths"] = [int(np.prod(s)) for s in baseline.meta["output_shapes"]]
    calibration_batch = None
    if calibration is not None:
        try:
            calibration_batch = to_rows(conform(as_batch(calibration, original.input_names), original, axes), axes)
        except ValueError as error:  # name the calibration file: the same check on --inputs passed
            where = f"calibration file {calibration}" if isinstance(calibration, (str, Path)) else "calibration inputs"
            raise ValueError(f"{where}: {error}") from None
        check_finite(calibration_batch, "calibration input")
    hints = {n: ("values", f"a state batched on axis {a}") for n, a in outputs.items() if a}
    data = user_dataset(batch, baseline, labels=labels, metric=metric, calibration=calibration_batch,
                        output_names=signature.output_names, name=name, output_kinds=output_kinds,
                        finetune_share=finetune_share, hints=hints, plan=plan, deterministic=deterministic)
    baseline.meta["notes"] = notes + data.meta["notes"]
    return baseline, data


def _refuse_fixed_batch_of_one(signature: OnnxSignature, batch: Batch, declared: dict | None) -> None:
    """A graph exported with a batch of 1 baked in takes one row at a time: say how to re-export it."""
    for spec in signature.inputs:
        array = batch.get(spec.name)
        if (array is None or not spec.shape or spec.shape[0] != 1 or np.ndim(array) == 0 or np.shape(array)[0] == 1
                or (declared or {}).get(spec.name, 0) != 0 or np.ndim(array) != len(spec.shape)):
            continue
        dims = ", ".join(str(d) for d in spec.shape)
        raise ValueError(f"input {spec.name!r}: the graph fixes the batch at 1 ([{dims}]) but {np.shape(array)[0]} "
                         f"rows were given; re-export it with a dynamic batch axis on every input and output, "
                         f"e.g. torch.onnx.export(..., dynamic_axes={{{spec.name!r}: {{0: 'batch'}}, "
                         f"'<output>': {{0: 'batch'}}}})")


def _batch_first_signature(signature: OnnxSignature, axes, outputs) -> tuple[OnnxSignature, list[str]]:
    """The model wrapped batch-first (in the cache, named by the file's content and the axes)."""
    # "wrapper": 2: wrappers written before subgraphs were handled may sit in the cache, broken
    key = sha256_json({"file": sha256_file(signature.path), "inputs": axes, "outputs": outputs, "wrapper": 2})[:16]
    target = cache_dir("user-models") / f"{signature.path.stem}-batch-first-{key}.onnx"
    if not target.is_file():
        partial = target.with_suffix(".partial")
        batch_first(signature.path, partial, axes, outputs)
        partial.replace(target)
    moved = [f"{n} (batch axis {a})" for n, a in {**axes, **outputs}.items() if a]
    constants = [n for n, a in axes.items() if a is None]
    parts = (["constant inputs given once and repeated per row: " + ", ".join(constants)] if constants else []) + \
            (["moved to batch-first: " + ", ".join(moved)] if moved else [])
    note = f"the model runs inside a batch-first wrapper ({'; '.join(parts)}); every candidate is built from it"
    return read_signature(target), [note]


def from_module(module: Any, inputs: Any, *, labels: Any = None, metric: str | Callable | None = None,
                calibration: Any = None, name: str = "user", output_kinds: dict[str, str] | None = None,
                finetune_share: float | None = None, deterministic: bool = True) -> tuple[Candidate, Dataset]:
    """Wrap a torch.nn.Module called as `module(**batch)`; every recipe applies to it. A tensor
    output is named "output0"; a tuple's are "output0", "output1", ...; a dict's and a dataclass's
    (ModelOutput) keep their keys (for `output_kinds`), each compared by its own kind."""
    import inspect


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
    scalars = [k for k, v in batch.items() if np.ndim(v) == 0]
    if scalars:
        raise ValueError(f"inputs {scalars} are scalars; a torch module gets one row per example on axis 0 "
                         f"(repeat the value per row, or export the model to ONNX and declare batch_axes)")
    check_finite(batch)
    plan = wrap_checks.plan_memory(batch)
    baseline, output_names = _module_baseline(module.eval(), take(batch, slice(0, min(2, plan.max_batch_rows))))
    calibration_batch = as_batch(calibration, names) if calibration is not None else None
    if calibration_batch is not None:
        check_finite(calibration_batch, "calibration input")
    data = user_dataset(batch, baseline, labels=labels, metric=metric, calibration=calibration_batch, name=name,
                        output_kinds=output_kinds, finetune_share=finetune_share, output_names=output_names,
                        plan=plan, deterministic=deterministic)
    baseline.meta["notes"] = list(data.meta["notes"])
    return baseline, data


def _module_baseline(module: Any, sample: Batch) -> tuple[Candidate, list[str] | None]:
    """The module as the baseline; one returning a tuple, dict or dataclass is wrapped so that its
    outputs come flattened side by side (named, with their per-row shapes in meta)."""
    from optlab.models.module_outputs import FlatOutputs, describe  # on use: it imports torch

    names, shapes, single = describe(module, sample)
    if single:
        return zoo.baseline(module), None
    baseline = zoo.baseline(FlatOutputs(module, names).eval())
    baseline.meta["output_shapes"] = [list(s) for s in shapes]
    return baseline, names


def user_dataset(inputs: Batch, baseline: Candidate, *, labels: Any = None, metric: str | Callable | None = None,
                 calibration: Batch | None = None, output_names=None, name: str = "user",
                 output_kinds: dict[str, str] | None = None, finetune_share: float | None = None,
                 hints: dict[str, tuple[str, str]] | None = None, plan: wrap_checks.MemoryPlan | None = None,
                 deterministic: bool = True) -> Dataset:
    """A Dataset over the user's rows: they are the test split (quality), the requests
    (speed) and, without `calibration`, the calibration split. With `finetune_share`, that
    share of the rows (a fixed random draw) is the train split and the test split is the rest.
    The baseline is checked first (finite, agreeing with itself: see wrap_checks)."""
    n = rows(inputs)
    plan = plan or wrap_checks.plan_memory(inputs)
    sample = np.asarray(baseline.predict(take(inputs, slice(0, min(n, 4, plan.max_batch_rows)))))
    shapes = _output_shapes(baseline, sample)
    names = list(output_names or [f"output{i}" for i in range(len(shapes))])
    _check_metric_and_labels(labels, metric)
    layout = output_layout(names, shapes, output_kinds, hints, sample=sample, metric=metric)
    notes = ["outputs compared as: " + ", ".join(f"{o['name']}={o['kind']} ({o['source']})" for o in layout)]
    if plan.max_batch_rows < wrap_checks.BATCH_SIZES[0] and plan.max_batch_rows < n:
        notes.append(plan.note())
    meta: dict[str, Any] = {"outputs": layout, "labelled": labels is not None, "source": "user", "notes": notes,
                            "max_batch_rows": plan.max_batch_rows}
    label_array = load_labels(labels, n) if labels is not None else np.full(n, -1, dtype=np.int64)
    task, num_classes, label_array = _metric_task(metric, label_array, layout, meta)
    runs = wrap_checks.check_baseline(baseline, inputs, layout, deterministic=deterministic,
                                      batch_rows=plan.max_batch_rows)
    if runs is not None:  # deterministic=False: the quality instruments measure the disagreement from these
        meta["self_runs"] = {**runs, "labels": label_array[:runs["rows"]]}
        notes.append("the baseline disagrees with itself (deterministic=False): every candidate's quality drop "
                     "is reduced by the disagreement of two baseline runs on the same rows")
    _check_degenerate(baseline, inputs, layout, meta)  # on finite outputs (check_baseline refused NaN/inf)
    split = Split(inputs, label_array)
    train, test = _train_and_test(split, finetune_share, meta)
    notes.extend(wrap_checks.warn_few_rows(len(test), None if calibration is None else rows(calibration)))
    if calibration is None:
        warnings.warn("no calibration set given: static quantization calibrates on the benchmark inputs, which "
                      "flatters its accuracy; pass calibration=... with other representative samples",
                      CalibrationOnBenchmarkData, stacklevel=3)
        calibration_split = split
    else:
        calibration_split = Split(calibration, np.full(rows(calibration), -1, dtype=np.int64))
    dataset = Dataset(name=name, task=task, num_classes=num_classes, train=train, validation=test, test=test,
                      calibration=calibration_split, requests=_requests(inputs, plan.max_batch_rows), slices={},
                      meta=meta)
    # The arrays (calibration included), the metric and the output kinds: each changes every row's quality.
    dataset.fingerprint = sha256_json({"arrays": content_fingerprint(dataset),
                                       "metric": str(meta.get("metric_name", metric)),
                                       "outputs": [(o["name"], o["kind"]) for o in layout]})
    return dataset


DEGENERATE_CHECK_ROWS = 256  # enough rows to see whether the baseline predicts anything but one thing


def _check_degenerate(baseline: Candidate, inputs: Batch, layout: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Warn in one line (and flag the dataset, so every row carries it) when the baseline's own
    outputs on the given rows are degenerate: blank everywhere, an empty map, one class for all."""
    n, step = min(rows(inputs), DEGENERATE_CHECK_ROWS), max(1, min(128, meta["max_batch_rows"]))
    outputs = np.concatenate([np.asarray(baseline.predict(take(inputs, slice(i, min(i + step, n))))).reshape(
        min(i + step, n) - i, -1) for i in range(0, n, step)])
    reasons = degenerate_outputs(outputs, layout)
    meta["degenerate_sample"] = bool(reasons)
    if reasons:
        line = describe_degenerate(reasons)
        meta["notes"].append(line)
        warnings.warn(line, DegenerateSample, stacklevel=4)


def _requests(inputs: Batch, max_rows: int) -> list[Batch]:
    """The benchmark's requests: mostly single rows (REQUEST_BATCH_SIZES), none larger than fits."""
    n, requests, start = rows(inputs), [], 0
    sizes = [min(size, max_rows) for size in REQUEST_BATCH_SIZES]
    for size in sizes * max(1, 64 // len(sizes)):
        if start >= n:
            start = 0
        requests.append(take(inputs, slice(start, start + size)))
        start += size
    return requests


def _train_and_test(split: Split, share: float | None, meta: dict[str, Any]) -> tuple[Split, Split]:
    """No separate training data: without `share` the train split is empty (fine-tuning refuses);
    with it, that share of the rows trains and quality is measured on the others only."""
    n = len(split)
    if share is None or share == 0:
        meta["finetune_rows"] = 0
        return split.take(np.arange(0)), split
    if not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ValueError(f"finetune_share={share!r}: give a share of the rows in (0, 1), e.g. 0.25, held out for "
                         f"fine-tuning; quality is then measured on the other rows")
    count = int(round(n * share))
    if count < 1 or n - count < 2:
        raise ValueError(f"finetune_share={share} of {n} rows leaves {count} rows to train on and {n - count} to "
                         f"measure quality on; give more rows or another share")
    order = np.random.default_rng(SEED).permutation(n)
    train_rows, test_rows = np.sort(order[:count]), np.sort(order[count:])
    meta.update(finetune_rows=int(count), finetune_share=float(share))
    meta["notes"].append(f"fine-tuning trains on {count} of the {n} given rows (finetune_share={share}); quality "
                         f"is measured on the other {n - count} rows, which nothing trained on")
    return split.take(train_rows), split.take(test_rows)


def _onnx_output_shapes(signature: OnnxSignature, sample: Batch) -> list[tuple[int, ...]]:
    """Per-row shape of each output (a model may have several outputs)."""
    outputs = ort_session(signature.path, threads=1).run(None, sample)
    return [tuple(int(d) for d in np.shape(o)[1:]) for o in outputs]


def _output_shapes(baseline: Candidate, sample: np.ndarray) -> list[tuple[int, ...]]:
    declared = baseline.meta.get("output_shapes")
    if declared:
        return [tuple(s) for s in declared]
    return [tuple(int(d) for d in np.shape(sample)[1:])]
