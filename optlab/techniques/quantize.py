"""Quantization: `apply(Quantize(...), model, data) -> Candidate`.

runtime="torch": bf16/fp16 (cast the model, or autocast with fp32 weights) and dynamic int8
for linear layers through torchao (`Int8DynamicActivationInt8WeightConfig`; embeddings get
int8 weight-only). runtime="onnxruntime" lives in `ort_quantize`, runtime="inc" in `inc`: each
registers for its runtime.
The caller's model is never mutated (deep copy first).
"""
from __future__ import annotations

import copy
from typing import Any

from optlab.models.candidate import Candidate
from optlab.models.runtimes import quiet_torch_logs, torch_predict_fn
from optlab.recipes.recipe import Quantize
from optlab.techniques.registry import register
from optlab.techniques.torch_io import require_module, save_module
from optlab.techniques.workdirs import artifact_file


@register(Quantize, runtime="torch")
def apply_torch_quantize(recipe: Quantize, model: Any, data: Any, *, threads=None, workdir=None) -> Candidate:
    with quiet_torch_logs():  # torchao/Dynamo start-up lines, for this build only
        return _apply_torch_quantize(recipe, model, data, threads=threads, workdir=workdir)


def _apply_torch_quantize(recipe: Quantize, model: Any, data: Any, *, threads=None, workdir=None) -> Candidate:

    require_module(model, recipe)
    module = copy.deepcopy(model).eval()
    meta: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if recipe.scheme in ("bf16", "fp16"):
        dtype = "bfloat16" if recipe.scheme == "bf16" else "float16"
        if recipe.autocast:
            options["autocast"] = dtype
            meta["precision"] = f"autocast {dtype} (fp32 weights)"
        else:
            import torch

            module = module.to(getattr(torch, dtype))
            options["input_dtype"] = dtype
            meta["precision"] = f"{dtype} weights and activations"
    else:  # dynamic-int8
        meta.update(_torchao_dynamic_int8(module))
    path = artifact_file(workdir, recipe.name, ".pt")
    options.update(save_module(module, path, original=model))
    return Candidate(
        name=recipe.name, predict_fn=torch_predict_fn(module, input_dtype=options.get("input_dtype"),
                                                      autocast=options.get("autocast")),
        family="quantization", runtime="torch", device="cpu", recipe=recipe, model=module,
        artifact_path=path, loader="optlab.models.runtimes:load_torch", loader_options={"threads": threads, **options},
        meta=meta)


def _torchao_dynamic_int8(module: Any) -> dict[str, Any]:
    """Linear layers: int8 dynamic activations x int8 weights (torchao's current API, the
    replacement of torch.ao.quantization.quantize_dynamic). Embedding tables: int8 weights
    per row, since they dominate the size of tabular models."""
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    linears = sum(isinstance(m, torch.nn.Linear) for m in module.modules())
    embeddings = sum(isinstance(m, torch.nn.Embedding) for m in module.modules())
    quantize_(module, Int8DynamicActivationInt8WeightConfig())
    meta = {"torchao_config": "Int8DynamicActivationInt8WeightConfig", "quantized_linear": linears}
    if embeddings:
        try:
            from torchao.quantization import IntxWeightOnlyConfig
            from torchao.quantization.granularity import PerAxis

            quantize_(module, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
                      filter_fn=lambda m, fqn: isinstance(m, torch.nn.Embedding))
            meta["quantized_embedding"] = embeddings
        except Exception as error:  # noqa: BLE001 - older torchao: embeddings stay fp32
            meta["embedding_error"] = f"{type(error).__name__}: {error}"[:200]
    return meta
