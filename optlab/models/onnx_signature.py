"""Read an ONNX file's inputs and outputs (names, dtypes, shapes with dynamic axes) and check
a user's batches against them, with errors that list what the model expects.

Exporters write "any size" as a named axis, an unnamed one, or `dim_value: -1` (or 0): all of
them are dynamic here. Not every input is batched on axis 0: a scalar (a sample rate) is a
constant, repeated for every request, and a recurrent state may be batched on axis 1. Each
input's batch axis (`None` for a constant) is declared by the user or inferred where the graph
or the data leaves one answer (`batch_axes`); `batch_first` then wraps the graph so that every
input and output is batch-first, and the rest of optlab slices and concatenates rows on axis 0.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from optlab.data.datasets import Batch

Dim = int | str | None  # a fixed size, a named dynamic axis ("batch"), or an unnamed dynamic one


_FLAGS = {"batch_axes": "--batch-axis", "output_kinds": "--output-kind"}
_CLI_SPELLING = contextvars.ContextVar("optlab_cli_spelling", default=False)


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Inside this block, errors that ask for a declaration spell it as the command line's flag
    (`--batch-axis state=1`) instead of the Python keyword (`batch_axes={'state': 1}`)."""
    token = _CLI_SPELLING.set(True)
    try:
        yield
    finally:
        _CLI_SPELLING.reset(token)


def spelled(keyword: str) -> str:
    """"batch_axes" or, from the command line, "--batch-axis"."""
    return _FLAGS[keyword] if _CLI_SPELLING.get() else keyword


def declare(keyword: str, name: str, value: Any) -> str:
    """How to declare `name`'s batch axis or output kind, as the caller would type it:
    `batch_axes={'state': 1}` in Python, `--batch-axis state=1` on the command line. A value
    written "<...>" is a placeholder."""
    placeholder = isinstance(value, str) and value.startswith("<")
    if _CLI_SPELLING.get():
        text = "none" if value is None else value.replace("None", "none") if placeholder else str(value)
        return f"{_FLAGS[keyword]} {name}={text}"
    return f"{keyword}={{{name!r}: {value if placeholder else repr(value)}}}"


def given_as(keyword: str, name: str, value: Any) -> str:
    """What the user gave, as they spelled it: `batch_axes['state']=5` or `--batch-axis state=5`."""
    return declare(keyword, name, value) if _CLI_SPELLING.get() else f"{keyword}[{name!r}]={value!r}"


class InputMismatch(ValueError):
    """The given inputs do not fit the model's signature."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int64"
    shape: tuple[Dim, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class OnnxSignature:
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    producer: str

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    def describe(self) -> str:
        ins = "; ".join(spec.describe() for spec in self.inputs)
        outs = "; ".join(spec.describe() for spec in self.outputs)
        return f"inputs {ins} -> outputs {outs} (opset {self.opset})"


def _spec(value) -> TensorSpec:
    from onnx.helper import tensor_dtype_to_np_dtype

    tensor_type = value.type.tensor_type
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_value"):  # -1 or 0: "any size" for several exporters; ONNX Runtime runs it
            dims.append(None)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorSpec(value.name, np.dtype(tensor_dtype_to_np_dtype(tensor_type.elem_type)).name, tuple(dims))


def read_signature(path: str | Path) -> OnnxSignature:
    """The graph's real inputs (initializers excluded) and outputs. Raises ValueError naming
    the file when it is missing or not a valid ONNX model."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}; pass the path of a .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types for bad files
        raise ValueError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc)[:300]}); "
                         f"export it with torch.onnx.export or check the file is complete") from exc
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in model.graph.output)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxSignature(path, inputs, outputs, int(opset), model.producer_name or "unknown")


_COMPATIBLE = {  # what a user may pass for each model dtype; we cast losslessly within a kind
    "float32": ("float32", "float64", "float16"),
    "float16": ("float16", "float32", "float64"),
    "float64": ("float64", "float32"),
    "int64": ("int64", "int32", "int16", "int8", "uint8"),
    "int32": ("int32", "int16", "int8", "uint8", "int64"),
    "bool": ("bool",),
}


Axes = dict[str, int | None]  # input or output name -> its batch axis (None: a constant, not batched)


def conform(batch: Batch, signature: OnnxSignature, axes: Axes | None = None) -> Batch:
    """Check `batch` against the signature and cast dtypes of the same kind (float64 ->
    float32, int32 -> int64). `axes` gives each input's batch axis (default 0; None for a
    constant). Raises InputMismatch listing expected vs given."""
    axes = axes or {}
    expected = "; ".join(spec.describe() for spec in signature.inputs)
    given = "; ".join(f"{k}: {np.asarray(v).dtype}{list(np.shape(v))}" for k, v in batch.items())
    names = set(signature.input_names)
    if set(batch) != names:
        missing, extra = sorted(names - set(batch)), sorted(set(batch) - names)
        raise InputMismatch(f"input names do not match the model: missing {missing}, unexpected {extra}. "
                            f"The model expects {expected}; given {given}. Rename the arrays (e.g. the "
                            f"keys of the .npz file) to the model's input names")
    out: Batch = {}
    rows, first = None, None
    for spec in signature.inputs:
        array = np.asarray(batch[spec.name])
        if array.dtype.name != spec.dtype:
            if array.dtype.name not in _COMPATIBLE.get(spec.dtype, (spec.dtype,)):
                raise InputMismatch(f"input {spec.name!r} has dtype {array.dtype} but the model expects "
                                    f"{spec.dtype}. The model expects {expected}; given {given}")
            array = array.astype(spec.dtype)
        if array.ndim != len(spec.shape):
            raise InputMismatch(f"input {spec.name!r} has {array.ndim} dimensions {list(array.shape)} but the "
                                f"model expects {len(spec.shape)}. The model expects {expected}; given {given}")
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=False)):
            if isinstance(want, int) and want != got:
                raise InputMismatch(f"input {spec.name!r} axis {axis} has size {got} but the model fixes it to "
                                    f"{want}. The model expects {expected}; given {given}")
        axis = axes.get(spec.name, 0)
        if axis is not None and array.ndim:
            if axis >= array.ndim:
                raise InputMismatch(f"input {spec.name!r} has no axis {axis} (shape {list(array.shape)}); "
                                    f"declare its batch axis: {declare('batch_axes', spec.name, '<axis or None>')}")
            if rows is not None and array.shape[axis] != rows:
                raise InputMismatch(f"inputs disagree on the number of rows: {first!r} has {rows}, {spec.name!r} "
                                    f"has {array.shape[axis]} on its batch axis {axis} (given {given}); declare "
                                    f"{declare('batch_axes', spec.name, '<axis or None>')} if axis {axis} "
                                    f"is not its batch axis")
            if rows is None:
                rows, first = array.shape[axis], spec.name
        out[spec.name] = array
    if rows is None:
        raise InputMismatch(f"no input has a batch axis (given {given}): at least one input must hold rows")
    return out


def batch_axes(signature: OnnxSignature, batch: Batch, declared: Axes | None = None) -> Axes:
    """Each input's batch axis: `declared` first; a rank-0 input is a constant (None); else the
    axis carrying the batch symbol most inputs share on axis 0 (a state [layers, batch, hidden]
    -> 1); else, when axis 0 is fixed by the model, its one dynamic axis; else 0. An input whose
    every axis the model fixes, given with another size than the other inputs' rows, is a
    constant too."""
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(signature.input_names) - set(signature.output_names))
    if unknown:
        raise ValueError(f"{spelled('batch_axes')} names {unknown}, which are not inputs or outputs of the model; "
                         f"its inputs are {list(signature.input_names)}, its outputs {list(signature.output_names)}")
    declared = {k: v for k, v in declared.items() if k in signature.input_names}
    symbol = _batch_symbol(signature.inputs)
    axes: Axes = {}
    for spec in signature.inputs:
        given = np.asarray(batch[spec.name]) if spec.name in batch else None
        if spec.name in declared:
            axis = declared[spec.name]
            valid = isinstance(axis, (int, np.integer)) and 0 <= axis < max(len(spec.shape), 1)
            if axis is not None and not valid:
                raise ValueError(f"{given_as('batch_axes', spec.name, axis)}: give an axis in 0..{len(spec.shape) - 1} "
                                 f"of {spec.describe()}, or None for a constant input")
            axes[spec.name] = None if axis is None else int(axis)
        elif len(spec.shape) == 0 or (given is not None and given.ndim == 0):
            axes[spec.name] = None
        else:
            axes[spec.name] = _inferred_axis(spec.shape, symbol)
    # an input the model fixes completely (sr: int64[1]) whose size differs from the rows the
    # dynamic inputs hold cannot be batched: it is a constant
    rows = {np.shape(batch[s.name])[axes[s.name]] for s in signature.inputs
            if s.name in batch and axes[s.name] is not None and s.name not in declared
            and not isinstance(s.shape[axes[s.name]], int) and np.ndim(batch[s.name]) > axes[s.name]}
    for spec in signature.inputs:
        fixed = spec.shape and all(isinstance(d, int) for d in spec.shape)
        if (spec.name not in declared and fixed and len(rows) == 1 and spec.name in batch
                and np.ndim(batch[spec.name]) and np.shape(batch[spec.name])[0] not in rows):
            axes[spec.name] = None
    return axes


def output_axes(signature: OnnxSignature) -> Axes:
    """Each output's batch axis, by the same rules as the inputs' (a next state batched on axis 1)."""
    symbol = _batch_symbol(signature.inputs)
    return {spec.name: _inferred_axis(spec.shape, symbol) if spec.shape else None for spec in signature.outputs}


def observed_output_axes(signature: OnnxSignature, batch: Batch, axes: Axes,
                         declared: Axes | None = None) -> tuple[Axes, dict[str, str]]:
    """Each output's batch axis and how it was found: declared (`batch_axes` may name outputs),
    else, for an output whose dimensions lack the inputs' batch symbol, observed (the graph run
    on 2 and 3 of the given rows, `batch` in the model's own layout: the axis whose size follows
    the row count), else the signature's rule. A state
    output whose every dimension the graph leaves dynamic is so found on its real batch axis."""
    declared = {k: v for k, v in (declared or {}).items() if k in signature.output_names}
    found, how = output_axes(signature), {}
    for name, axis in declared.items():
        found[name], how[name] = axis, "declared"
    rows = next(np.shape(batch[n])[a] for n, a in axes.items() if a is not None and n in batch)
    symbol = _batch_symbol(signature.inputs)
    # an output carrying the inputs' batch symbol says its axis; only the others are run to see
    unsure = [s.name for s in signature.outputs if s.name not in declared and (symbol is None or symbol not in s.shape)]
    shapes = [_output_shapes(signature, batch, axes, k) for k in (2, 3)] if unsure and rows >= 3 else None
    for position, spec in enumerate(signature.outputs):
        if spec.name in declared:
            continue
        how[spec.name] = "from the graph's dimensions"
        if shapes is None or spec.name not in unsure:
            continue
        small, large = shapes[0][position], shapes[1][position]
        follows = [i for i, (a, b) in enumerate(zip(small, large, strict=False))
                   if len(small) == len(large) and a == 2 and b == 3]
        if follows:
            found[spec.name] = found[spec.name] if found[spec.name] in follows else follows[0]
            how[spec.name] = "observed: its size follows the row count"
    return found, how


def _output_shapes(signature: OnnxSignature, batch: Batch, axes: Axes, count: int) -> list[tuple[int, ...]]:
    """The output shapes of the original graph on its first `count` rows (constants whole)."""
    import onnxruntime as ort

    feed = {name: (np.asarray(value) if axes.get(name, 0) is None
                   else np.take(np.asarray(value), np.arange(count), axis=axes.get(name, 0)))
            for name, value in batch.items()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(signature.path), options, providers=["CPUExecutionProvider"])
    return [tuple(np.shape(o)) for o in session.run(None, feed)]


def describe_axes(inputs: Axes, outputs: Axes, how: dict[str, str]) -> str:
    """One line naming every batch axis, e.g. "batch axes: inputs x=0, sr=constant, state=1; outputs ..."."""
    def name(axis) -> str:
        return "constant" if axis is None else str(axis)

    outs = ", ".join(f"{n}={name(a)}" + (f" ({how[n]})" if n in how else "") for n, a in outputs.items())
    return f"batch axes: inputs {', '.join(f'{n}={name(a)}' for n, a in inputs.items())}; outputs {outs}"


def _batch_symbol(specs) -> str | None:
    names = [spec.shape[0] for spec in specs if spec.shape and isinstance(spec.shape[0], str)]
    return max(set(names), key=names.count) if names else None


def _inferred_axis(shape: tuple[Dim, ...], symbol: str | None) -> int:
    if symbol is not None and symbol in shape:
        return shape.index(symbol)
    if shape and isinstance(shape[0], int):
        dynamic = [i for i, d in enumerate(shape) if not isinstance(d, int)]
        if len(dynamic) == 1:
            return dynamic[0]
    return 0


def to_rows(batch: Batch, axes: Axes) -> Batch:
    """The batch with every input batch-first: its batch axis moved to 0, a constant repeated once
    per row (rows come from the batched inputs)."""
    rows = next(np.asarray(v).shape[axes.get(k, 0)] for k, v in batch.items() if axes.get(k, 0) is not None)
    out: Batch = {}
    for name, value in batch.items():
        axis = axes.get(name, 0)
        array = np.asarray(value)
        out[name] = (np.repeat(array[None], rows, axis=0) if axis is None
                     else np.ascontiguousarray(np.moveaxis(array, axis, 0)) if axis else array)
    return out


def needs_adapter(inputs: Axes, outputs: Axes) -> bool:
    return any(axis != 0 for axis in list(inputs.values()) + list(outputs.values()))


def batch_first(source: str | Path, target: str | Path, inputs: Axes, outputs: Axes) -> Path:
    """Write `source` wrapped so every input and output is batch-first: a Transpose in front of
    each input batched on another axis, a Gather of row 0 for each constant (given once per row),
    a Transpose behind each output batched on another axis. The model's own nodes are unchanged.

    Done on onnx-ir's graph, where a name is a property of one value object: the model's value
    gets a new name and every node that reads it, inside `If`/`Loop`/`Scan` subgraphs as well as
    at the top level, reads the renamed value; hand-renaming protobuf strings misses the subgraphs."""
    import onnx
    import onnx_ir as ir

    model = ir.serde.deserialize_model(onnx.load(str(source)))
    graph = model.graph
    zero = None
    for position, value in enumerate(list(graph.inputs)):
        axis = inputs.get(value.name, 0)
        if axis == 0:
            continue
        name, dims = value.name, list(value.shape or [])
        outer = ir.Value(name=name, type=value.type)
        if axis is None:
            if zero is None:
                zero = ir.Value(name="optlab_row0", const_value=ir.tensor(np.array(0, dtype=np.int64)))
                graph.register_initializer(zero)
            node = ir.Node("", "Gather", [outer, zero], [ir.AttrInt64("axis", 0)], name=f"{name}_row0")
            outer.shape = ir.Shape(["batch", *dims])
        else:
            perm = list(range(1, axis + 1)) + [0] + list(range(axis + 1, len(dims)))
            node = ir.Node("", "Transpose", [outer], [ir.AttrInt64s("perm", perm)], name=f"{name}_to_model")
            outer.shape = ir.Shape([dims[axis], *dims[:axis], *dims[axis + 1:]])
        ir.convenience.replace_all_uses_with(value, node.outputs[0])
        node.outputs[0].name, node.outputs[0].type = f"{name}__model", value.type
        graph.inputs[position] = outer
        graph.insert_before(graph[0], node)
    for position, value in enumerate(list(graph.outputs)):
        axis = outputs.get(value.name, 0)
        if not axis:
            continue
        name, dims = value.name, list(value.shape or [])
        value.name = f"{name}__model"
        perm = [axis] + [i for i in range(len(dims)) if i != axis]
        node = ir.Node("", "Transpose", [value], [ir.AttrInt64s("perm", perm)], name=f"{name}_batch_first")
        out = node.outputs[0]
        out.name, out.type, out.shape = name, value.type, ir.Shape([dims[i] for i in perm]) if dims else None
        graph.append(node)
        graph.outputs[position] = out
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(target))
    return Path(target)
