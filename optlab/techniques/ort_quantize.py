"""ONNX Runtime quantization: dynamic int8, static int8 (QDQ, calibrated on the calibration
split with MinMax / Entropy / Percentile, per-tensor or per-channel) and fp16 graphs.

An nn.Module is exported to ONNX (fp32) first; the result's `.model` is an OnnxModel so a
following `Compile("onnxruntime", ...)` step can pick a graph level for it.

Graphs from other exporters are made quantizable first (Constant-node weights lifted to
initializers, ORT's optional pre-processing, opset 13 for per-channel), always from a fresh
load of the file on disk, with every intermediate file in a scratch folder that is removed
whatever happens; and every int8 artifact is checked afterwards: the count
of quantized operators and the share of weights stored as integers go into the candidate's
meta and notes; an "int8" artifact with no integer weight is an UnsupportedRecipe, never a row
that claims int8. What the quantizer logs is collected into one note, not printed.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from optlab.data.calibration import calibration_rows
from optlab.instruments.environment import cpu_info
from optlab.models.candidate import Candidate, OnnxModel
from optlab.models.runtimes import load_onnxruntime
from optlab.recipes.recipe import Quantize, UnsupportedRecipe
from optlab.techniques import onnx_graph
from optlab.techniques.onnx_export import as_onnx, gemm_to_matmul
from optlab.techniques.registry import register
from optlab.techniques.workdirs import artifact_file

# Gather covers embedding tables: without it a tabular model keeps most of its bytes in fp32.
DYNAMIC_OPS = ["MatMul", "Gather", "Attention", "LSTM", "EmbedLayerNormalization"]
STATIC_OPS = ["Conv", "Gemm", "MatMul", "Gather", "Relu", "Add", "Mul", "Concat", "Reshape", "Flatten",
              "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "AveragePool", "GlobalAveragePool"]


@register(Quantize, runtime="onnxruntime")
def apply_ort_quantize(recipe: Quantize, model: Any, data: Any, *, threads=None, workdir: Path) -> Candidate:

    start = time.perf_counter()
    notes: list[str] = []
    source = as_onnx(model, data, workdir, notes=notes)
    out = artifact_file(workdir, recipe.name, ".onnx")
    meta: dict[str, Any] = {"source_onnx": str(source.path)}
    # Every intermediate file (the prepared graph, what the quantizer writes next to it such as
    # "*-inferred.onnx") lives in a scratch folder removed on success and failure alike.
    with onnx_graph.captured_output(notes), tempfile.TemporaryDirectory(dir=workdir, prefix="scratch-") as scratch:
        prepared = _prepared(Path(source.path), Path(scratch), notes, recipe=recipe,
                             sample=_sample(data, source.input_names))
        try:
            if recipe.scheme == "dynamic-int8":
                meta.update(_dynamic(recipe, prepared, out, Path(scratch)))
            elif recipe.scheme == "static-int8":
                meta.update(_static(recipe, prepared, out, data))
            else:
                meta.update(_fp16(prepared, out))
        except BaseException:
            out.unlink(missing_ok=True)  # a half-written artifact is no candidate
            raise
    if recipe.scheme != "fp16":
        try:
            meta.update(_checked(out, recipe, notes))
        except UnsupportedRecipe:
            out.unlink(missing_ok=True)  # an "int8" artifact with no integer weight is not kept either
            raise
    source_bytes, out_bytes = Path(source.path).stat().st_size, out.stat().st_size
    if out_bytes > source_bytes:
        notes.append(f"the {recipe.scheme} artifact ({out_bytes:,} bytes) is larger than its fp32 source "
                     f"({source_bytes:,} bytes): scales, zero points and extra nodes outweigh what the weights saved")
    meta["notes"] = notes
    meta["apply_s"] = round(time.perf_counter() - start, 3)
    options = {"threads": threads, "graph_level": "all", "provider": "cpu"}
    return Candidate(
        name=recipe.name, predict_fn=load_onnxruntime(out, **options), family="quantization",
        runtime="onnxruntime", device="cpu", recipe=recipe,
        model=OnnxModel(out, source.input_names, source.output_names), artifact_path=out,
        loader="optlab.models.runtimes:load_onnxruntime", loader_options=options, meta=meta)


def _sample(data: Any, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Two rows of the calibration split (else the test split), fed to read tensor types."""
    split = data.calibration if len(getattr(data, "calibration", ())) else data.test
    rows = next(split.take(slice(0, 2)).batches(2))
    return {name: np.ascontiguousarray(rows[name]) for name in (names or rows)}


def _prepared(source: Path, scratch: Path, notes: list[str], *, recipe: Quantize,
              sample: dict[str, np.ndarray]) -> Path:
    """The graph the quantizer gets, written into `scratch`: always from a fresh load of the
    file on disk (never a proto an earlier step touched); Constant-node weights lifted to
    initializers; (int8) ORT's pre-processing, optional: when it fails, the note says so and the
    original graph goes on; types filled in where shape inference had none; (per-channel) the
    graph at opset 13 or later."""
    import onnx

    proto, lifted = onnx_graph.lift_constants(onnx.load(str(source)))
    if lifted:
        notes.append(f"{lifted} Constant-node weights lifted to initializers (onnx-ir) so the quantizer sees them")
    staged = scratch / (source.stem + "-staged.onnx")
    onnx.save(proto, str(staged))
    if recipe.scheme != "fp16":
        processed = scratch / (source.stem + "-pre.onnx")
        proto = onnx.load(str(processed if onnx_graph.preprocess(staged, processed, notes) else staged))
    proto = onnx_graph.fill_types(proto, sample, notes)
    if recipe.per_channel and recipe.scheme != "fp16":
        try:
            proto = onnx_graph.per_axis_ready(proto, notes)
        except ValueError as error:
            raise UnsupportedRecipe(str(error)) from None
    target = scratch / (source.stem + "-prepared.onnx")
    onnx.save(proto, str(target))
    return target


def _checked(out: Path, recipe: Quantize, notes: list[str]) -> dict[str, Any]:
    """What the quantizer did to the artifact; no integer weight at all is an UnsupportedRecipe."""
    import onnx

    proto = onnx.load(str(out))
    report = onnx_graph.quantization_report(proto)
    if report["quantized_weight_elements"] == 0:
        left = onnx_graph.constant_weights(proto)
        weighted = sorted({n.op_type for n in proto.graph.node if n.op_type in ("MatMul", "Gemm", "Conv", "Gather")})
        nested = sorted({n.op_type for n in proto.graph.node if any(a.HasField("g") or a.graphs for a in n.attribute)})
        if nested:
            why = (f"the graph's weights sit inside {'/'.join(nested)} subgraphs, which ONNX Runtime's quantizer "
                   f"does not quantize here")
        elif left:
            why = f"{left} weights are Constant nodes optlab could not lift to initializers"
        elif not weighted:
            why = f"the graph has no MatMul/Gemm/Conv/Gather among its {len(proto.graph.node)} nodes"
        else:
            why = f"ONNX Runtime skipped every weight of its {', '.join(weighted)} nodes"
        logged = next((n for n in notes if " logged " in n), "")
        message = (f"the quantizer quantized nothing ({recipe.scheme}): {why}; the artifact has "
                   f"{report['quantized_ops']} quantized operators and no integer weight. {logged}")
        raise UnsupportedRecipe(message.strip())
    notes.append(onnx_graph.describe_report(report))
    return report


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def reduce_range() -> bool:
    """Whether int8 weights must use 7 bits on this CPU: an x86 CPU without VNNI multiplies u8 x s8
    with `vpmaddubsw`, whose 16-bit pair sums saturate when both weights of a pair are near 127, and
    ONNX Runtime's u8s8 kernels then return wrong numbers (seen: the digits CNN's logits off by more
    than 10% of their scale on an AVX2-only EPYC; exact on AVX-512 VNNI). ONNX Runtime's own advice
    for such CPUs is `reduce_range`; a CPU with VNNI (or not x86) keeps all 8 bits."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    _, flags = cpu_info()
    return not (flags & VNNI_FLAGS)


def _dynamic(recipe: Quantize, source: Path, out: Path, workdir: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = gemm_to_matmul(onnx.load(str(source)))
    rewritten = workdir / (out.stem + "-matmul.onnx")
    onnx.save(proto, str(rewritten))
    seven_bits = reduce_range()
    quantize_dynamic(str(rewritten), str(out), op_types_to_quantize=DYNAMIC_OPS, per_channel=recipe.per_channel,
                     reduce_range=seven_bits, weight_type=QuantType.QInt8,
                     extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    rewritten.unlink(missing_ok=True)
    return {"format": "dynamic (MatMulInteger / DynamicQuantizeLinear)", "op_types": DYNAMIC_OPS,
            "per_channel": recipe.per_channel, "reduce_range": seven_bits}


class _Reader:
    """CalibrationDataReader over the chosen calibration rows, in batches."""

    def __init__(self, split: Any, names: list[str], batch_size: int = 512):
        # equal-sized batches: the histogram collectors (entropy, percentile) stack them
        batches = [{n: np.ascontiguousarray(b[n]) for n in names} for b in split.batches(batch_size)]
        if len(batches) > 1 and len(next(iter(batches[-1].values()))) < batch_size:
            batches.pop()
        self.batches = batches
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self):
        self.position = 0


def _static(recipe: Quantize, source: Path, out: Path, data: Any) -> dict[str, Any]:
    from onnx import TensorProto
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(_Reader, CalibrationDataReader):
        pass

    rows = calibration_rows(data, recipe.calibration_samples, recipe.calibration_data)
    names = _graph_inputs(source)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[recipe.calibration]
    seven_bits = reduce_range()
    quantize_static(  # its progress prints and log lines are collected by the caller
        str(source), str(out), Reader(rows, names), quant_format=QuantFormat.QDQ, op_types_to_quantize=STATIC_OPS,
        per_channel=recipe.per_channel, reduce_range=seven_bits, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method=method,
        extra_options={"CalibMovingAverage": False, "CalibPercentile": 99.99,
                       "DefaultTensorType": TensorProto.FLOAT})
    return {"format": "QDQ (U8 activations, S8 weights)", "calibration": recipe.calibration,
            "calibration_rows": len(rows), "calibration_data": recipe.calibration_data,
            "per_channel": recipe.per_channel, "op_types": STATIC_OPS, "reduce_range": seven_bits}


def _fp16(source: Path, out: Path) -> dict[str, Any]:
    """fp16 weights and compute, fp32 inputs/outputs (onnxconverter-common is not needed:
    onnxruntime ships the converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(proto, str(out))
    return {"format": "fp16 graph, fp32 I/O", "converter": "onnxruntime.transformers.float16"}
