"""GPU candidates: `apply(OnDevice(...), model, data) -> Candidate` on a CUDA device.

A deep copy of the module goes to the device in the recipe's precision, optionally with torchao
int8/float8 dynamic quantization or 2:4 semi-structured sparsity of its linear layers, and is run
eagerly, through `torch.compile` (optionally in "reduce-overhead" mode, which replays CUDA graphs),
or through CUDA graphs captured here per input shape. Float32 matmul precision (fp32 vs TF32) and
cuDNN's TF32 switch are process-wide in torch: each call sets them for this candidate and puts
back what it found, so candidates in one process never leak settings into each other.

Besides `predict(batch)` (numpy in, numpy out: the copies to and from the device included), the
candidate's meta carries `device_inputs(batch) -> tensors on the device, cast` and
`device_forward(tensors) -> output on the device`, so instruments can time the device work with
inputs already resident. A CUDA-graph forward returns its static output buffer: read it before the
next call. Without CUDA the recipe is refused with the reason (UnsupportedRecipe).
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Callable

import numpy as np

from optlab.instruments.gpu import cuda_status
from optlab.models.candidate import Candidate, OnnxModel
from optlab.models.runtimes import compile_module, quiet_torch_logs
from optlab.recipes.recipe import OnDevice, UnsupportedRecipe
from optlab.techniques.registry import register
from optlab.techniques.torch_io import example_batch, require_module

# torch and torchao are imported on use (after the CUDA check): heavy optional dependencies, and
# torchao is needed only for its quantizers.

DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}
GRAPH_WARMUP_CALLS = 3  # eager calls on a side stream before capture (cuBLAS handles, allocator pools)


def _require_cuda(recipe: OnDevice) -> Any:
    ok, why = cuda_status()
    if not ok:
        raise UnsupportedRecipe(f"{recipe.name}: {why}")
    import torch

    index = int(recipe.device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise UnsupportedRecipe(f"{recipe.name}: no {recipe.device} here (torch sees {torch.cuda.device_count()} "
                                f"CUDA device(s)); use device='cuda'")
    return torch


@contextlib.contextmanager
def matmul_precision(precision: str):
    """fp32 -> true fp32 matmuls and convolutions; tf32 -> TF32 tensor cores for both; restored on exit."""
    import torch

    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def _inputs_fn(device: str, dtype: Any) -> Callable[[dict[str, np.ndarray]], dict[str, Any]]:
    """numpy batch -> device tensors; floating inputs cast to `dtype` (None: as they are)."""
    import torch

    def device_inputs(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        tensors = {}
        for name, value in batch.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value)).to(device)
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            tensors[name] = tensor
        return tensors

    return device_inputs


def _forward_fn(module: Any, recipe: OnDevice) -> Callable[[dict[str, Any]], Any]:
    """Device tensors -> device output, under inference mode, this candidate's matmul precision
    and (optionally) autocast."""
    import torch

    amp = getattr(torch, DTYPES[recipe.precision]) if recipe.autocast else None
    device_type = "cuda"

    def forward(tensors: dict[str, Any]) -> Any:
        ctx = torch.autocast(device_type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with matmul_precision(recipe.precision), torch.inference_mode(), ctx:
            return module(**tensors)

    return forward


class CapturedGraphs:
    """CUDA graphs captured by hand, one per input signature (names, shapes, dtypes): each call
    copies the inputs into the graph's static buffers and replays it. Launch overhead, which
    dominates batch-1 latency, is paid once at capture."""

    def __init__(self, forward: Callable[[dict[str, Any]], Any], precision: str):
        self.forward = forward
        self.precision = precision
        self.graphs: dict[tuple, tuple[dict[str, Any], Any, Any]] = {}

    def __call__(self, tensors: dict[str, Any]) -> Any:
        key = tuple((name, tuple(t.shape), str(t.dtype)) for name, t in sorted(tensors.items()))
        if key not in self.graphs:
            self.graphs[key] = self._capture(tensors)
        static_inputs, graph, static_output = self.graphs[key]
        for name, tensor in tensors.items():
            static_inputs[name].copy_(tensor, non_blocking=True)
        graph.replay()
        return static_output

    def _capture(self, tensors: dict[str, Any]):
        import torch

        static_inputs = {name: t.clone() for name, t in tensors.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(GRAPH_WARMUP_CALLS):
                self.forward(static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.forward(static_inputs)
        torch.cuda.synchronize()
        return static_inputs, graph, static_output


def _sparsify_24(module: Any, torch: Any) -> dict[str, Any]:
    """Keep the 2 largest-magnitude weights of every 4 along each row of every linear layer and
    store the weight semi-structured (cuSPARSELt or CUTLASS kernels). Layers whose shape the
    kernels refuse stay dense and unpruned, and are named in the meta."""
    if torch.cuda.get_device_capability() < (8, 0):
        raise UnsupportedRecipe(f"2:4 sparsity needs an Ampere or newer GPU (compute capability >= 8.0); this one is "
                                f"{'.'.join(map(str, torch.cuda.get_device_capability()))}")
    from torch.sparse import to_sparse_semi_structured

    sparse, dense = [], {}
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Linear):
            continue
        weight = layer.weight.detach()
        if weight.shape[1] % 4:
            dense[name] = f"in_features={weight.shape[1]} is not a multiple of 4"
            continue
        groups = weight.reshape(-1, 4)
        keep = groups.abs().argsort(dim=1, descending=True)[:, :2]
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True).reshape(weight.shape)
        try:
            packed = to_sparse_semi_structured(weight * mask)
        except Exception as error:  # noqa: BLE001 - shape/dtype the kernels refuse: leave the layer dense
            dense[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
            continue
        layer.weight = torch.nn.Parameter(packed, requires_grad=False)
        sparse.append(name)
    if not sparse:
        raise UnsupportedRecipe(f"2:4 sparsity: no linear layer has a shape the semi-structured kernels take "
                                f"({dense})")
    return {"sparse_layers": sparse, "dense_layers": dense}


def _torchao(module: Any, scheme: str, torch: Any) -> dict[str, Any]:
    """torchao dynamic quantization of the linear layers: int8 x int8, or float8 x float8 with
    per-row scales (Hopper's fp8 tensor cores; compute capability >= 8.9)."""
    try:
        from torchao.quantization import quantize_
    except Exception as error:  # noqa: BLE001 - not installed, or built for another torch
        raise UnsupportedRecipe(f"quantize={scheme!r} needs torchao, which did not import here "
                                f"({type(error).__name__}: {str(error)[:160]}); pip install torchao") from error
    capability = torch.cuda.get_device_capability()
    if scheme == "float8":
        if capability < (8, 9):
            raise UnsupportedRecipe(f"float8 needs compute capability >= 8.9 (Ada, Hopper); this GPU is "
                                    f"{capability[0]}.{capability[1]}")
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    else:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        config = Int8DynamicActivationInt8WeightConfig()
    linears = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    quantize_(module, config)
    plain = (torch.nn.Parameter, torch.Tensor)
    converted = [name for name, m in module.named_modules()
                 if isinstance(m, torch.nn.Linear) and type(m.weight) not in plain]
    if not converted:
        raise UnsupportedRecipe(f"torchao {type(config).__name__} converted none of the {len(linears)} linear layers "
                                f"(float8 needs both dimensions divisible by 16)")
    return {"torchao_config": type(config).__name__, "quantized_layers": converted,
            "unquantized_layers": [name for name in linears if name not in converted]}


@register(OnDevice)
def apply_on_device(recipe: OnDevice, model: Any, data: Any, *, threads=None, workdir=None) -> Candidate:
    with quiet_torch_logs():  # torchao/Dynamo start-up lines, for this build only
        return _apply_on_device(recipe, model, data, threads=threads, workdir=workdir)


def _apply_on_device(recipe: OnDevice, model: Any, data: Any, *, threads=None, workdir=None) -> Candidate:
    if isinstance(model, OnnxModel):
        raise UnsupportedRecipe(f"{recipe.name} runs a torch.nn.Module; got an ONNX model ({model.path}). For ONNX "
                                f"on a GPU use Compile(runtime='onnxruntime', provider='cuda')")
    torch = _require_cuda(recipe)
    require_module(model, recipe)

    dtype = getattr(torch, DTYPES[recipe.precision])
    cast_model = recipe.precision in ("bf16", "fp16") and not recipe.autocast
    module = copy.deepcopy(model).eval().to(recipe.device)
    if cast_model:
        module = module.to(dtype)
    meta: dict[str, Any] = {"precision": recipe.precision, "graphs": recipe.graphs,
                            "gpu": torch.cuda.get_device_name(torch.device(recipe.device))}
    family = "quantization" if recipe.precision in ("bf16", "fp16") else "compilation"
    with torch.cuda.device(torch.device(recipe.device)):
        if recipe.sparsity == "2:4":
            meta.update(_sparsify_24(module, torch))
            family = "pruning"
        if recipe.quantize != "none":
            meta.update(_torchao(module, recipe.quantize, torch))
            family = "quantization"
    runnable = module
    if recipe.graphs in ("compile", "compile-cudagraphs"):
        mode = "reduce-overhead" if recipe.graphs == "compile-cudagraphs" else "default"
        runnable = compile_module(module, mode=mode, freezing=False, dynamic=False)
        meta["compile_mode"] = mode
    forward = _forward_fn(runnable, recipe)
    if recipe.graphs == "manual":
        forward = CapturedGraphs(forward, recipe.precision)
    device_inputs = _inputs_fn(recipe.device, dtype if cast_model else None)

    def predict(batch: dict[str, np.ndarray]) -> np.ndarray:
        return forward(device_inputs(batch)).float().cpu().numpy()

    start = time.perf_counter()
    predict(example_batch(data, n=8))  # compile or capture now, so steady-state timings never pay for it
    meta["first_call_s"] = round(time.perf_counter() - start, 3)
    meta.update(device_inputs=device_inputs, device_forward=forward)
    return Candidate(name=recipe.name, predict_fn=predict, family=family, runtime=_runtime(recipe),
                     device=recipe.device, recipe=recipe, model=module, meta=meta)


def _runtime(recipe: OnDevice) -> str:
    return {"none": "torch", "compile": "torch.compile", "compile-cudagraphs": "torch.compile",
            "manual": "torch+cudagraphs"}[recipe.graphs]
