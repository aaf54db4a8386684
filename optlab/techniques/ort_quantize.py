"""ONNX Runtime quantization: dynamic int8, static int8 (QDQ, calibrated on the calibration
split with MinMax / Entropy / Percentile, per-tensor or per-channel) and fp16 graphs.

An nn.Module is exported to ONNX (fp32) first; the result's `.model` is an OnnxModel so a
following `Compile("onnxruntime", ...)` step can pick a graph level for it.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from optlab.data.calibration import calibration_rows
from optlab.models.candidate import Candidate, OnnxModel
from optlab.recipes.recipe import Quantize
from optlab.techniques.onnx_export import as_onnx, gemm_to_matmul
from optlab.techniques.registry import register
from optlab.techniques.workdirs import artifact_file

# Gather covers embedding tables: without it a tabular model keeps most of its bytes in fp32.
DYNAMIC_OPS = ["MatMul", "Gather", "Attention", "LSTM", "EmbedLayerNormalization"]
STATIC_OPS = ["Conv", "Gemm", "MatMul", "Gather", "Relu", "Add", "Mul", "Concat", "Reshape", "Flatten",
              "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "AveragePool", "GlobalAveragePool"]


@register(Quantize, runtime="onnxruntime")
def apply_ort_quantize(recipe: Quantize, model: Any, data: Any, *, threads=None, workdir: Path) -> Candidate:
    from optlab.models.runtimes import load_onnxruntime

    start = time.perf_counter()
    source = as_onnx(model, data, workdir)
    out = artifact_file(workdir, recipe.name, ".onnx")
    meta: dict[str, Any] = {"source_onnx": str(source.path)}
    if recipe.scheme == "dynamic-int8":
        meta.update(_dynamic(recipe, source.path, out, workdir))
    elif recipe.scheme == "static-int8":
        meta.update(_static(recipe, source.path, out, data, workdir))
    else:
        meta.update(_fp16(source.path, out))
    meta["apply_s"] = round(time.perf_counter() - start, 3)
    options = {"threads": threads, "graph_level": "all", "provider": "cpu"}
    return Candidate(
        name=recipe.name, predict_fn=load_onnxruntime(out, **options), family="quantization",
        runtime="onnxruntime", device="cpu", recipe=recipe,
        model=OnnxModel(out, source.input_names, source.output_names), artifact_path=out,
        loader="optlab.models.runtimes:load_onnxruntime", loader_options=options, meta=meta)


def _preprocessed(source: Path, workdir: Path) -> Path:
    """ORT's recommended pre-processing (shape inference + graph clean-up); the raw graph if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = workdir / (source.stem + "-pre.onnx")
    previous = os.getcwd()
    try:
        # Symbolic shape inference writes sym_shape_infer_temp.onnx (+ a <uuid>.data file) into the
        # current directory, and leaves them behind when it fails: keep them in the workdir.
        os.chdir(workdir)
        quant_pre_process(str(source.resolve()), str(target.resolve()), skip_symbolic_shape=False)
        return target
    except Exception:
        return source
    finally:
        os.chdir(previous)


def _dynamic(recipe: Quantize, source: Path, out: Path, workdir: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = gemm_to_matmul(onnx.load(str(_preprocessed(source, workdir))))
    rewritten = workdir / (out.stem + "-matmul.onnx")
    onnx.save(proto, str(rewritten))
    quantize_dynamic(str(rewritten), str(out), op_types_to_quantize=DYNAMIC_OPS, per_channel=recipe.per_channel,
                     reduce_range=False, weight_type=QuantType.QInt8,
                     extra_options={"MatMulConstBOnly": True})
    rewritten.unlink(missing_ok=True)
    return {"format": "dynamic (MatMulInteger / DynamicQuantizeLinear)", "op_types": DYNAMIC_OPS,
            "per_channel": recipe.per_channel}


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


def _static(recipe: Quantize, source: Path, out: Path, data: Any, workdir: Path) -> dict[str, Any]:
    import onnx
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
    names = [i.name for i in onnx.load(str(source), load_external_data=False).graph.input]
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[recipe.calibration]
    pre = _preprocessed(source, workdir)
    with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print progress lines
        quantize_static(
            str(pre), str(out), Reader(rows, names), quant_format=QuantFormat.QDQ, op_types_to_quantize=STATIC_OPS,
            per_channel=recipe.per_channel, reduce_range=False, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=method,
            extra_options={"CalibMovingAverage": False, "CalibPercentile": 99.99})
    return {"format": "QDQ (U8 activations, S8 weights)", "calibration": recipe.calibration,
            "calibration_rows": len(rows), "calibration_data": recipe.calibration_data,
            "per_channel": recipe.per_channel, "op_types": STATIC_OPS}


def _fp16(source: Path, out: Path) -> dict[str, Any]:
    """fp16 weights and compute, fp32 inputs/outputs (onnxconverter-common is not needed:
    onnxruntime ships the converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(proto, str(out))
    return {"format": "fp16 graph, fp32 I/O", "converter": "onnxruntime.transformers.float16"}
