"""What a candidate weighs: parameter count and the fraction of weights that are exactly zero.

Counts a torch module's effective weights (a `torch.nn.utils.prune` mask applied) or an
ONNX file's initializers. Pruning only pays once zeros are removed or stored compressed,
so the zero fraction is shown beside the size on disk, never instead of it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# onnx is imported inside the functions that read ONNX files: a heavy import that sizing a torch
# artifact must not pay for.


def _torch_weights(module: Any):
    # torch.nn.utils.prune keeps `weight_orig` as the parameter; the masked `weight` is what runs.
    for _, owner in module.named_modules():
        for name, param in owner.named_parameters(recurse=False):
            base = name[: -len("_orig")] if name.endswith("_orig") else None
            yield getattr(owner, base) if base is not None and hasattr(owner, base) else param


def torch_footprint(module: Any) -> tuple[int, float | None]:
    count, zeros = 0, 0
    for tensor in _torch_weights(module):
        count += int(tensor.numel())
        if zeros is not None:
            try:
                zeros += int((tensor.detach() == 0).sum())
            except Exception:  # noqa: BLE001 - packed/quantized tensor subclasses: zeros are not countable
                zeros = None
    return count, (zeros / count if count and zeros is not None else None)


def onnx_footprint(path: str | os.PathLike) -> tuple[int, float | None]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.fspath(path), load_external_data=True)
    count, zeros = 0, 0
    for initializer in model.graph.initializer:
        array = numpy_helper.to_array(initializer, base_dir=os.fspath(Path(path).parent))
        count += int(array.size)
        zeros += int(np.count_nonzero(array == 0))
    return count, (zeros / count if count else None)


def footprint(model: Any, artifact_path: str | os.PathLike | None = None) -> tuple[int | None, float | None]:
    """(parameter count, zero fraction) of a torch module, an OnnxModel or an .onnx
    artifact; (None, None) when neither is countable."""
    if model is not None and hasattr(model, "named_modules") and hasattr(model, "named_parameters"):
        return torch_footprint(model)
    onnx_path = getattr(model, "path", None)
    if onnx_path is None and artifact_path is not None and str(artifact_path).endswith(".onnx"):
        onnx_path = artifact_path
    if onnx_path is not None and Path(onnx_path).is_file() and str(onnx_path).endswith(".onnx"):
        return onnx_footprint(onnx_path)
    return None, None
