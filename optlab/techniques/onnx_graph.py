"""Getting an ONNX graph from another exporter ready for ONNX Runtime's quantizer, and checking
what the quantizer really did.

- `lift_constants`: weights held in `Constant` nodes (several exporters write them so) become
  initializers (onnx-ir's LiftConstantsToInitializersPass); ORT's quantizer only quantizes
  initializers and silently skips the rest.
- `preprocess`: ORT's recommended pre-processing (symbolic shape inference, graph clean-up,
  ONNX shape inference), file to file (never a proto it could mutate), without touching the
  current directory; each failed step is a note.
- `per_axis_ready`: per-channel Q/DQ needs opset 13; older graphs are converted first.
- `quantization_report`: how many quantized operators the artifact holds and what share of
  its weight elements are stored as integers: an "int8" artifact with none is not int8.
- `captured_output`: the quantizer's log records, warnings, prints and C-level stderr lines,
  collected (counted, de-duplicated) instead of flooding the terminal.
"""
from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

QUANTIZED_OP_TYPES = frozenset({
    "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QuantizeLinear", "DequantizeLinear",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits", "QAttention", "QGemm", "DynamicQuantizeLSTM",
    "QEmbedLayerNormalization", "QOrderedMatMul"})
MIN_WEIGHT_ELEMENTS = 16  # smaller tensors are scales, zero points, shapes and scalars, not weights
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def is_quantized_op(op_type: str) -> bool:
    return op_type in QUANTIZED_OP_TYPES or op_type.startswith("QLinear")


# --- constants -> initializers ---------------------------------------------------------------

def constant_weights(proto: Any) -> int:
    """How many `Constant` nodes in the main graph hold a tensor of at least MIN_WEIGHT_ELEMENTS."""
    import numpy as np
    from onnx import helper

    count = 0
    for node in proto.graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for attribute in node.attribute:
            if attribute.name == "value":
                tensor = helper.get_attribute_value(attribute)
                if int(np.prod(tensor.dims, dtype=np.int64)) >= MIN_WEIGHT_ELEMENTS:
                    count += 1
    return count


def lift_constants(proto: Any) -> tuple[Any, int]:
    """(proto with every Constant-node tensor as an initializer, how many weights of at least
    MIN_WEIGHT_ELEMENTS were among them). Small ones are lifted too: a 4-element Gemm bias left in a
    Constant node makes the static quantizer warn ("Expected bias ... to be an initializer") and
    keep it fp32."""
    import onnx_ir as ir
    from onnx_ir.passes.common import LiftConstantsToInitializersPass

    before = constant_weights(proto)
    if not any(node.op_type == "Constant" for node in proto.graph.node):
        return proto, 0
    model = ir.serde.deserialize_model(proto)
    LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    lifted = ir.serde.serialize_model(model)
    return lifted, before - constant_weights(lifted)


# --- tensor types shape inference could not give ------------------------------------------------

def fill_types(proto: Any, feed: dict[str, Any], notes: list[str]) -> Any:
    """Give every main-graph tensor without a known type (after an operator ONNX shape inference
    does not know, e.g. ai.onnx.ml's Scaler) the type ONNX Runtime computes for it on `feed`:
    the quantizer skips untyped tensors and the fp16 converter mixes types around them."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper

    try:  # what ONNX's own shape inference can say first (exporters often store no value_info)
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception as error:  # noqa: BLE001 - a failure here only means more tensors to read from a run
        notes.append(f"ONNX shape inference failed ({type(error).__name__}: {_first_line(error)})")
    graph = proto.graph
    known = {v.name for v in [*graph.input, *graph.output, *graph.value_info]} | {t.name for t in graph.initializer}
    missing = [name for node in graph.node for name in node.output if name and name not in known]
    if not missing:
        return proto
    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in missing)
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        values = session.run(missing, feed)
    except Exception as error:  # noqa: BLE001 - typing is a help for the quantizer, not a requirement
        notes.append(f"{len(missing)} tensors have no inferred type and ONNX Runtime could not give one "
                     f"({type(error).__name__}: {_first_line(error)}); the quantizer may skip them")
        return proto
    for name, value in zip(missing, values, strict=True):
        array = np.asarray(value)
        graph.value_info.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(array.dtype), [None] * array.ndim))
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    notes.append(f"types of {len(missing)} tensors shape inference could not infer ({shown}) taken from one "
                 f"ONNX Runtime run")
    return proto


# --- ORT's pre-processing, no chdir ------------------------------------------------------------

def _symbolic_shapes(proto: Any) -> Any:
    """ORT's symbolic shape inference, minus its habit of writing sym_shape_infer_temp.onnx into
    the current directory when it fails (SymbolicShapeInference.infer_shapes does that)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inference = SymbolicShapeInference(2**31 - 1, False, False, 0)
    inference._preprocess(proto)
    complete = False
    while inference.run_:
        complete = inference._infer_impl()
    inference._update_output_from_vi()
    if not complete:
        unknown = [o.name for o in inference.out_mp_.graph.output if not o.type.tensor_type.HasField("shape")]
        raise RuntimeError(f"incomplete symbolic shape inference (an operator it does not know; outputs without "
                           f"a shape: {unknown or 'intermediate tensors'})")
    return inference.out_mp_


def preprocess(source: Path, target: Path, notes: list[str]) -> bool:
    """ORT's recommended pre-processing of the graph in the file `source`, saved to `target`;
    True when it worked. Every failure is a note, and `source` is never touched: ORT's
    `quant_pre_process`, handed a ModelProto, moves its initializers to external data in place
    before its optimizer runs, so a failure there (e.g. on `Resize`) would leave a proto no one
    can read. It is handed file paths only; its files go into `target`'s folder."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    given = str(source)
    try:
        shaped = _symbolic_shapes(onnx.load(str(source)))
        given = str(target.with_name(target.stem + "-shaped.onnx"))
        onnx.save(shaped, given)
    except Exception as error:  # noqa: BLE001 - any failure of this optional step becomes a note
        notes.append(f"quantization pre-processing: symbolic shape inference failed ({type(error).__name__}: "
                     f"{_first_line(error)}); continued without it")
    try:
        quant_pre_process(given, str(target), skip_symbolic_shape=True)
        onnx.checker.check_model(str(target))  # a valid result, or the step failed (its fusions inside
        return True  # If branches can read outer initializers out of order)
    except Exception as error:  # noqa: BLE001 - the raw graph is still quantizable; say so
        notes.append(f"quantization pre-processing failed ({type(error).__name__}: {_first_line(error)}); "
                     f"quantized the original graph without it")
        return False


PER_AXIS_OPSET = 13  # DequantizeLinear's `axis` (per-channel scales) exists from opset 13 on


def opset(proto: Any) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def per_axis_ready(proto: Any, notes: list[str]) -> Any:
    """`proto` at an opset where per-channel Q/DQ is valid: converted with onnx.version_converter
    when it is older, with a note. Raises ValueError saying why when the conversion fails."""
    import onnx
    from onnx import version_converter

    found = opset(proto)
    if found >= PER_AXIS_OPSET:
        return proto
    try:
        converted = version_converter.convert_version(proto, PER_AXIS_OPSET)
        onnx.checker.check_model(converted)
    except Exception as error:  # noqa: BLE001 - the converter raises several types; the message says which
        raise ValueError(f"per-channel int8 needs opset >= {PER_AXIS_OPSET} (DequantizeLinear's axis) and this "
                         f"graph is opset {found}; onnx.version_converter could not convert it "
                         f"({type(error).__name__}: {_first_line(error)}); use per_channel=False or re-export "
                         f"the model at opset {PER_AXIS_OPSET}+") from None
    notes.append(f"per-channel int8 needs opset >= {PER_AXIS_OPSET}: the opset-{found} graph was converted to "
                 f"opset {PER_AXIS_OPSET} (onnx.version_converter) before quantizing")
    return converted


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else "")[:limit]


# --- what the quantizer did --------------------------------------------------------------------

def quantization_report(proto: Any) -> dict[str, Any]:
    """Quantized operators by type, and integer vs float weight elements.

    A weight is an initializer or Constant tensor of at least MIN_WEIGHT_ELEMENTS elements that is
    not a Q/DQ scale or zero point; int8/uint8/int4 tensors count as quantized, int32 ones too
    when they feed a DequantizeLinear (QDQ biases); float tensors count as not quantized."""
    import numpy as np
    from onnx import TensorProto, helper

    integer = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4}
    floating = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    graph = proto.graph
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    tensors[node.output[0]] = helper.get_attribute_value(attribute)
    dequantized, used = set(), set()
    for node in graph.node:
        for position, name in enumerate(node.input):
            if node.op_type in _QDQ and position >= 1:
                continue  # a scale or a zero point
            used.add(name)
            if node.op_type == "DequantizeLinear" and position == 0:
                dequantized.add(name)
    quantized = floats = 0
    for name, tensor in tensors.items():
        size = int(np.prod(tensor.dims, dtype=np.int64))
        if size < MIN_WEIGHT_ELEMENTS or name.endswith(("_scale", "_zero_point")) or name not in used:
            continue
        if tensor.data_type in integer or (tensor.data_type == TensorProto.INT32 and name in dequantized):
            quantized += size
        elif tensor.data_type in floating:
            floats += size
    ops = collections.Counter(n.op_type for n in graph.node if is_quantized_op(n.op_type))
    total = quantized + floats
    return {"quantized_ops": int(sum(ops.values())), "quantized_op_types": dict(sorted(ops.items())),
            "quantized_weight_elements": quantized, "float_weight_elements": floats,
            "quantized_weight_share": round(quantized / total, 4) if total else 0.0}


def describe_report(report: dict[str, Any]) -> str:
    ops = ", ".join(f"{op} x{n}" for op, n in report["quantized_op_types"].items()) or "none"
    return (f"int8 check: {report['quantized_ops']} quantized operators ({ops}); "
            f"{report['quantized_weight_share']:.1%} of weight elements stored as integers")


# --- the quantizer's chatter -------------------------------------------------------------------

_NAMES = re.compile(r"(?<=tensor: )\S+|(?<=bias )\S+|(?<=node )\S+|(?<=tensor )\S+|0x[0-9a-f]+|\d{4,}")


@contextlib.contextmanager
def captured_output(notes: list[str], source: str = "onnxruntime quantizer") -> Iterator[None]:
    """Collect log records (WARNING and up), Python warnings, prints and C-level stderr lines of
    the block; on exit append one note that counts and de-duplicates them (names replaced by
    <name>). The root logger's handlers, stdout and file descriptor 2 are restored."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    handler = Collect(level=logging.WARNING)
    root.handlers = [handler]  # a root handler also stops logging.warning() from calling basicConfig
    printed = io.StringIO()
    stderr_copy = None
    caught: list[warnings.WarningMessage] = []
    with tempfile.TemporaryFile(mode="w+b") as c_stderr:
        try:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
                stderr_copy = os.dup(2)
                os.dup2(c_stderr.fileno(), 2)
            with warnings.catch_warnings(record=True) as recorded, contextlib.redirect_stdout(printed), \
                    contextlib.redirect_stderr(printed):
                warnings.simplefilter("always")
                try:
                    yield
                finally:
                    caught.extend(recorded)
        finally:
            root.handlers = saved_handlers
            if stderr_copy is not None:
                os.dup2(stderr_copy, 2)
                os.close(stderr_copy)
            c_stderr.seek(0)
            lines = c_stderr.read().decode(errors="replace").splitlines()
            records.extend(str(w.message) for w in caught)
            records.extend(printed.getvalue().splitlines())
            records.extend(lines)
            note = summarize_lines(records, source)
            if note:
                notes.append(note)


def summarize_lines(lines: list[str], source: str, shown: int = 3, width: int = 120) -> str | None:
    """"<source> logged N lines (K distinct): 'msg' x5; ..." or None when there were none."""
    kept = [line.strip() for line in lines if line.strip() and not _progress(line)]
    if not kept:
        return None
    counts = collections.Counter(_NAMES.sub("<name>", line)[:width] for line in kept)
    parts = [f"{text!r} x{n}" if n > 1 else repr(text) for text, n in counts.most_common(shown)]
    more = f"; and {len(counts) - shown} more" if len(counts) > shown else ""
    return f"{source} logged {len(kept)} lines ({len(counts)} distinct, not printed): {'; '.join(parts)}{more}"


def _progress(line: str) -> bool:
    """Calibrators print progress lines ('Collecting tensor data ...'): not worth a note."""
    return line.lstrip().startswith(("Collecting tensor data", "Finding optimal threshold", "Computing histogram"))
