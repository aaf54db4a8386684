"""ONNX export of a keyword-input torch model: input names = the dataset's input names,
a dynamic batch axis (and a dynamic sequence axis for text inputs), one `logits` output."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from optlab.models.candidate import OnnxModel
from optlab.recipes.recipe import UnsupportedRecipe
from optlab.techniques.torch_io import (
    TEXT_AXES,
    example_batch,
    input_names,
    positional,
    positional_tensors,
    require_module,
)

OPSET = 17


def export_onnx(model: Any, data: Any, path: Path, *, dynamo: bool = False,
                notes: list[str] | None = None) -> OnnxModel:
    """Export `model` to `path`. The TorchScript exporter (dynamo=False) is the default: it is
    stable for these models and needs no onnxscript; dynamo=True is the fallback when it fails.
    When the fallback runs, the first exporter's error goes into `notes` (and into the error
    raised when the fallback fails too), so it is never lost."""
    import torch

    names = input_names(data)
    batch = example_batch(data, n=2)
    args = positional_tensors(batch, names)
    wrapped = positional(model.eval(), names)
    axes = {n: ({0: "batch", 1: "sequence"} if n in TEXT_AXES else {0: "batch"}) for n in names}
    axes["logits"] = {0: "batch"}
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _export(torch, wrapped, args, path, names, axes, dynamo)
        except Exception as first:
            if dynamo:
                raise
            reason = f"{type(first).__name__}: {_first_line(first)}"
            try:
                _export(torch, wrapped, args, path, names, axes, True)
            except Exception as second:
                raise RuntimeError(f"ONNX export failed: the TorchScript exporter raised {reason}; the dynamo "
                                   f"exporter then raised {type(second).__name__}: {_first_line(second)}") from second
            if notes is not None:
                notes.append(f"ONNX export: the TorchScript exporter failed ({reason}); exported with dynamo=True")
    return OnnxModel(path=path, input_names=tuple(names), output_names=("logits",))


def _first_line(error: BaseException, limit: int = 300) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else "")[:limit]


def _export(torch, wrapped, args, path, names, axes, dynamo: bool) -> None:
    if dynamo:
        batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
        shapes = (tuple({0: batch, 1: sequence} if n in TEXT_AXES else {0: batch} for n in names),)
        torch.onnx.export(wrapped, args, str(path), input_names=names, output_names=["logits"],
                          dynamic_shapes=shapes, opset_version=18, dynamo=True, external_data=False)
    else:
        torch.onnx.export(wrapped, args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def as_onnx(model: Any, data: Any, workdir: Path, *, notes: list[str] | None = None) -> OnnxModel:
    """An OnnxModel as is, or an nn.Module exported (fp32) into `workdir` first (what the export
    had to work around goes into `notes`)."""
    if isinstance(model, OnnxModel):
        if not Path(model.path).exists():
            raise UnsupportedRecipe(f"ONNX file {model.path} does not exist")
        return OnnxModel(Path(model.path), tuple(model.input_names), tuple(model.output_names))

    class _Export:  # only for the error message's recipe name
        name = "ONNX export"

    require_module(model, _Export)
    path = workdir / "model-fp32.onnx"
    n = 0
    while path.exists():
        n += 1
        path = workdir / f"model-fp32-{n}.onnx"
    return export_onnx(model, data, path, notes=notes)


def _read_names(graph) -> set[str]:
    """Every tensor name a node reads, in `If`/`Loop`/`Scan` subgraphs too (a branch may read an
    outer initializer that no top-level node reads)."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                names |= _read_names(sub)
    return names


def gemm_to_matmul(proto: Any) -> Any:
    """Rewrite Gemm(A, W, b) with constant W as MatMul + Add: ORT's *dynamic* quantizer
    covers MatMul but not Gemm, which is what nn.Linear exports to."""
    import onnx  # on use: onnx's import is heavy and only the export and rewrite paths need it
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    nodes = []
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        simple = (node.op_type == "Gemm" and node.input[1] in inits and attrs.get("transA", 0) == 0
                  and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0)
        if not simple:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)
        new_name = node.input[1] + "_matmul"
        proto.graph.initializer.append(numpy_helper.from_array(weight, new_name))
        base = node.name or node.output[0]  # unnamed nodes are common: names must stay unique
        if len(node.input) > 2 and node.input[2]:
            mid = node.output[0] + "_mm"
            nodes.append(helper.make_node("MatMul", [node.input[0], new_name], [mid], name=base + "_MatMul"))
            nodes.append(helper.make_node("Add", [mid, node.input[2]], [node.output[0]], name=base + "_Add"))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], new_name], [node.output[0]], name=base))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = _read_names(proto.graph)
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    onnx.checker.check_model(proto)
    return proto
