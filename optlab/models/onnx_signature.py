"""Read an ONNX file's inputs and outputs (names, dtypes, shapes with dynamic axes) and check
a user's batches against them, with errors that list what the model expects."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optlab.data.datasets import Batch

Dim = int | str | None  # a fixed size, a named dynamic axis ("batch"), or an unnamed dynamic one


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
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
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


def conform(batch: Batch, signature: OnnxSignature) -> Batch:
    """Check `batch` against the signature and cast dtypes of the same kind (float64 ->
    float32, int32 -> int64). Raises InputMismatch listing expected vs given."""
    expected = "; ".join(spec.describe() for spec in signature.inputs)
    given = "; ".join(f"{k}: {np.asarray(v).dtype}{list(np.shape(v))}" for k, v in batch.items())
    names = set(signature.input_names)
    if set(batch) != names:
        missing, extra = sorted(names - set(batch)), sorted(set(batch) - names)
        raise InputMismatch(f"input names do not match the model: missing {missing}, unexpected {extra}. "
                            f"The model expects {expected}; given {given}. Rename the arrays (e.g. the "
                            f"keys of the .npz file) to the model's input names")
    out: Batch = {}
    rows = None
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
        if array.ndim and rows is not None and array.shape[0] != rows:
            raise InputMismatch(f"inputs disagree on the number of rows (axis 0): {given}")
        rows = array.shape[0] if array.ndim else rows
        out[spec.name] = array
    return out
