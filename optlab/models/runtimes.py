"""Fresh-process loaders: `function(artifact_path, **options) -> predict(batch) -> np.ndarray`.

A Candidate names one of these as its `loader` so cold start and peak memory can be
measured in a new process. Each loader imports only its own runtime: the ONNX Runtime
and OpenVINO loaders never import torch, so their cold start does not pay for it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np

Predict = Callable[[dict[str, np.ndarray]], np.ndarray]

ORT_GRAPH_LEVELS = ("disabled", "basic", "extended", "all")
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _as_float32(output: Any) -> np.ndarray:
    array = np.asarray(output)
    return array.astype(np.float32, copy=False) if array.dtype != np.float32 else array


def _joined(outputs: list) -> np.ndarray:
    """One output as is; several (an analyst's multi-head model) flattened per row and
    concatenated, so every candidate still returns one batch-first array."""
    if len(outputs) == 1:
        return _as_float32(outputs[0])
    return np.concatenate([_as_float32(o).reshape(len(o), -1) for o in outputs], axis=1)


# --- ONNX Runtime --------------------------------------------------------------------

def ort_session(path: str | os.PathLike, *, threads: int | None = None, graph_level: str = "all",
                provider: str = "cpu", profile_prefix: str | None = None, spinning: bool = False):
    """An InferenceSession with a graph optimization level, intra-op threads and one provider.

    Intra-op threads do not spin while they wait for work unless `spinning=True`: on a machine
    other processes use (a laptop with a browser and a call, a shared CI runner), spinning
    threads burn the CPU their siblings need, and a 2-thread session's sub-millisecond calls went
    bimodal (p90 8.8 ms against 0.46 ms without spinning, 3.5x fewer calls in the same time; the
    README's "How figures are measured" has the figures). On a quiet machine spinning saves a
    wake-up per parallel section; pass `spinning=True` to measure that deployment."""
    import onnxruntime as ort

    if graph_level not in ORT_GRAPH_LEVELS:
        raise ValueError(f"graph_level={graph_level!r}; choose one of {ORT_GRAPH_LEVELS}")
    if provider not in ORT_PROVIDERS:
        raise ValueError(f"provider={provider!r}; choose one of {tuple(ORT_PROVIDERS)}")
    name = ORT_PROVIDERS[provider]
    if name not in ort.get_available_providers():
        raise RuntimeError(
            f"{name} is not available in this onnxruntime build "
            f"(available: {ort.get_available_providers()}); install onnxruntime-gpu or use provider='cpu'"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_level]
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=[name])


def ort_predict_fn(session) -> Predict:
    """predict(batch) over a session: feeds only the graph's inputs, in their dtypes."""
    inputs = [(i.name, i.type) for i in session.get_inputs()]
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(double)": np.float64}
    outputs = [o.name for o in session.get_outputs()]

    def predict(batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(batch[name], dtype=dtypes.get(kind)) for name, kind in inputs}
        return _joined(session.run(outputs, feed))

    return predict


def load_onnxruntime(path: str | os.PathLike, *, threads: int | None = None, graph_level: str = "all",
                     provider: str = "cpu") -> Predict:
    return ort_predict_fn(ort_session(path, threads=threads, graph_level=graph_level, provider=provider))


# --- OpenVINO ------------------------------------------------------------------------

def openvino_predict_fn(path: str | os.PathLike, *, threads: int | None = None,
                        precision: str = "f32") -> Predict:
    """OpenVINO on CPU reading an ONNX file. `precision` pins INFERENCE_PRECISION_HINT: OpenVINO
    otherwise picks bf16 on CPUs that have it, which would silently change the numerics."""
    import openvino as ov

    from optlab.models import signal_stack

    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    with signal_stack.kept():  # the CPU plugin swaps the thread's signal stack (models.signal_stack)
        compiled = core.compile_model(core.read_model(os.fspath(path)), "CPU", config)
    names = [port.get_any_name() for port in compiled.inputs]
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def predict(batch: dict[str, np.ndarray]) -> np.ndarray:
        result = request.infer({name: np.ascontiguousarray(batch[name]) for name in names})
        return _joined([np.array(result[output]) for output in outputs])

    return predict


load_openvino = openvino_predict_fn


# --- torch ---------------------------------------------------------------------------

def torch_predict_fn(module, *, input_dtype: str | None = None, autocast: str | None = None,
                     positional: tuple[str, ...] | None = None) -> Predict:
    """predict(batch) for a torch module called as `module(**inputs)` (or positionally, for
    exported graphs), under inference_mode; float inputs cast to `input_dtype`, optional autocast."""
    import torch

    cast = getattr(torch, input_dtype) if input_dtype else None
    amp = getattr(torch, autocast) if autocast else None

    def predict(batch: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {}
        for name, value in batch.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            if cast is not None and tensor.is_floating_point():
                tensor = tensor.to(cast)
            tensors[name] = tensor
        ctx = torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            out = module(*(tensors[n] for n in positional)) if positional else module(**tensors)
        return out.detach().float().numpy()

    return predict


QUIET_LOGGERS = ("torchao", "neural_compressor", "torch._dynamo", "torch._inductor", "torch.utils._pytree")
QUIET_WARNINGS = (".*register_constant.*", ".*To copy construct from a tensor.*")


@contextlib.contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Within the block, keep harmless torchao/INC/Dynamo start-up lines ("Failed to load
    _C_mxfp8", accelerator detection, pytree's register_constant deprecation) out of notebook
    output: those loggers at ERROR and those warnings ignored. On exit every logger gets its own
    level back and the warning filters are restored, so the rest of the process logs as it chose."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def load_torch(path: str | os.PathLike, *, threads: int | None = None, input_dtype: str | None = None,
               autocast: str | None = None, skeleton: str | None = None) -> Predict:
    """A whole module saved with torch.save, or a state_dict loaded into a weightless skeleton
    (`assign=True` keeps quantized tensor subclasses as they are)."""
    import torch

    with quiet_torch_logs():
        try:  # torchao tensor subclasses must be importable before unpickling
            import torchao  # noqa: F401
        except ImportError:
            pass
        if skeleton:
            module = torch.load(skeleton, weights_only=False)
            module.load_state_dict(torch.load(os.fspath(path), weights_only=False, map_location="cpu"), assign=True)
        else:
            module = torch.load(os.fspath(path), weights_only=False, map_location="cpu")
    module = module.eval()
    if threads:
        torch.set_num_threads(int(threads))
    return torch_predict_fn(module, input_dtype=input_dtype, autocast=autocast)


def compile_module(module, *, mode: str = "default", freezing: bool = True, dynamic: bool | None = None):
    """torch.compile with Inductor freezing on or off (freezing constant-folds weights and is
    what makes PT2E int8 fast on CPU). Dynamo and Inductor read the process-wide
    `torch._inductor.config.freezing` while they trace and compile, so the returned callable sets
    it only around calls that may compile (the first call with each input shape) and restores it:
    the flag outside those calls is the caller's, and steady-state calls pay one dict look-up."""
    import torch

    compiled = torch.compile(module, mode=None if mode == "default" else mode, dynamic=dynamic)
    return _CompileWithFreezing(compiled, bool(freezing))


class _CompileWithFreezing:
    def __init__(self, compiled, freezing: bool):
        self.compiled, self.freezing, self.seen = compiled, freezing, set()

    def __call__(self, *args, **kwargs):
        key = (tuple(getattr(a, "shape", None) for a in args),
               tuple((k, getattr(v, "shape", None)) for k, v in kwargs.items()))
        if key in self.seen:
            return self.compiled(*args, **kwargs)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=self.freezing), quiet_torch_logs():
            out = self.compiled(*args, **kwargs)
        self.seen.add(key)
        return out


def _register_quantized_ops() -> None:
    """PT2E int8 graphs use torchao's quantize/dequantize ops; a fresh process must register
    them before torch.export.load can read the file."""
    try:
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 - registers the ops
    except ImportError:
        pass


def load_torch_compiled(path: str | os.PathLike, *, threads: int | None = None, mode: str = "default",
                        freezing: bool = True, dynamic: bool | None = None,
                        positional: tuple[str, ...] | None = None) -> Predict:
    """A saved module (torch.save, or torch.export .pt2) compiled with torch.compile at load."""
    import torch

    with quiet_torch_logs():
        if os.fspath(path).endswith(".pt2"):
            _register_quantized_ops()
            module = torch.export.load(os.fspath(path)).module()
        else:
            module = torch.load(os.fspath(path), weights_only=False, map_location="cpu").eval()
    if threads:
        torch.set_num_threads(int(threads))
    compiled = compile_module(module, mode=mode, freezing=freezing, dynamic=dynamic)
    return torch_predict_fn(compiled, positional=tuple(positional) if positional else None)
