"""Compilation and runtimes: `apply(Compile(...), model, data) -> Candidate`.

- onnxruntime: an InferenceSession over the ONNX file (an nn.Module is exported first) with a
  graph optimization level, the workload's intra-op threads and a provider (CUDA or CPU);
- openvino: OpenVINO's CPU runtime reading the same ONNX file (fp32 precision pinned);
- torch.compile: Inductor, with freezing and a dynamic batch dimension by default.
"""
from __future__ import annotations

import copy
import time
from typing import Any

from optlab.models.candidate import Candidate, OnnxModel
from optlab.models.runtimes import (
    ORT_PROVIDERS,
    compile_module,
    openvino_predict_fn,
    ort_predict_fn,
    ort_session,
    quiet_torch_logs,
    torch_predict_fn,
)
from optlab.recipes.recipe import Compile, UnsupportedRecipe
from optlab.techniques.onnx_export import as_onnx
from optlab.techniques.registry import register
from optlab.techniques.torch_io import example_batch, require_module, save_module
from optlab.techniques.workdirs import artifact_file

# onnxruntime, OpenVINO and torch are imported in the handler that uses each: heavy optional
# dependencies; registering the handlers must load none of them.


@register(Compile, runtime="onnxruntime")
def apply_onnxruntime(recipe: Compile, model: Any, data: Any, *, threads=None, workdir) -> Candidate:
    import onnxruntime as ort

    wanted = ORT_PROVIDERS[recipe.provider]
    if wanted not in ort.get_available_providers():
        raise UnsupportedRecipe(f"{recipe.name}: {wanted} is not available here (onnxruntime "
                                f"{ort.__version__} has {ort.get_available_providers()}); use provider='cpu' "
                                f"or install onnxruntime-gpu on a CUDA machine")
    notes: list[str] = []
    onnx_model = as_onnx(model, data, workdir, notes=notes)
    options = {"threads": threads, "graph_level": recipe.graph_level, "provider": recipe.provider}
    session = ort_session(onnx_model.path, **options)
    return Candidate(
        name=recipe.name, predict_fn=ort_predict_fn(session), family="compilation", runtime="onnxruntime",
        device="cuda" if recipe.provider == "cuda" else "cpu", recipe=recipe, model=onnx_model,
        artifact_path=onnx_model.path, loader="optlab.models.runtimes:load_onnxruntime", loader_options=options,
        meta={"providers": session.get_providers(), "graph_level": recipe.graph_level, "notes": notes})


@register(Compile, runtime="openvino")
def apply_openvino(recipe: Compile, model: Any, data: Any, *, threads=None, workdir) -> Candidate:
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        raise UnsupportedRecipe(f"{recipe.name}: the openvino package is not installed (pip install openvino)") \
            from error

    notes: list[str] = []
    onnx_model = as_onnx(model, data, workdir, notes=notes)
    options = {"threads": threads, "precision": "f32"}
    return Candidate(
        name=recipe.name, predict_fn=openvino_predict_fn(onnx_model.path, **options), family="compilation",
        runtime="openvino", device="cpu", recipe=recipe, model=onnx_model, artifact_path=onnx_model.path,
        loader="optlab.models.runtimes:load_openvino", loader_options=options,
        meta={"openvino_version": openvino.__version__, "inference_precision": "f32", "notes": notes})


@register(Compile, runtime="torch.compile")
def apply_torch_compile(recipe: Compile, model: Any, data: Any, *, threads=None, workdir) -> Candidate:
    with quiet_torch_logs():  # torchao/Dynamo start-up lines, for this build only
        return _apply_torch_compile(recipe, model, data, threads=threads, workdir=workdir)


def _apply_torch_compile(recipe: Compile, model: Any, data: Any, *, threads=None, workdir) -> Candidate:
    if isinstance(model, OnnxModel):
        raise UnsupportedRecipe(f"{recipe.name} needs a torch.nn.Module, got an ONNX model ({model.path}); "
                                f"put torch.compile before ONNX steps or use Compile('onnxruntime')")
    require_module(model, recipe)

    module = copy.deepcopy(model).eval()
    path = artifact_file(workdir, recipe.name, ".pt")
    loader = "optlab.models.runtimes:load_torch_compiled"
    try:
        save_module(module, path)
    except Exception:  # noqa: BLE001 - e.g. a torchao-quantized module: weights only, no fresh-process loader
        import torch

        torch.save(module.state_dict(), path)
        loader = None
    compiled = compile_module(module, mode=recipe.mode, freezing=recipe.freezing, dynamic=recipe.dynamic)
    predict = torch_predict_fn(compiled)
    start = time.perf_counter()
    predict(example_batch(data, n=8))  # the first call compiles: keep it out of steady-state timings
    options = {"threads": threads, "mode": recipe.mode, "freezing": recipe.freezing, "dynamic": recipe.dynamic}
    return Candidate(
        name=recipe.name, predict_fn=predict, family="compilation", runtime="torch.compile", device="cpu",
        recipe=recipe, model=module, artifact_path=path, loader=loader,
        loader_options=options, meta={"compile_s": round(time.perf_counter() - start, 3), **options})
