"""Tiny real things for tests, examples and benchmarks: torch models of the shapes analysts bring
(exported to real ONNX files with torch.onnx.export) and a results frame shaped like
`Study.results`. Importing this module imports torch, pandas and numpy.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, image):
        return self.head(torch.relu(self.conv(image)).flatten(1))


class TokenClassifier(nn.Module):
    """Two inputs, int64 token ids and a mask, like a text model exported by another tool."""

    def __init__(self, vocab=50, dim=8, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


class TwoHeads(nn.Module):
    """Two outputs: class scores and a regression value."""

    def __init__(self, features=6):
        super().__init__()
        self.body = nn.Linear(features, 16)
        self.classes = nn.Linear(16, 4)
        self.value = nn.Linear(16, 1)

    def forward(self, features):
        hidden = torch.relu(self.body(features))
        return self.classes(hidden), self.value(hidden)


class ScoresOnly(nn.Module):
    """The class-score head of TwoHeads, as an analyst's own torch module."""

    def __init__(self):
        super().__init__()
        self.inner = TwoHeads()

    def forward(self, features):
        return self.inner(features)[0]


def export(module: nn.Module, example: dict[str, np.ndarray], path: Path, *, opset: int = 17,
           output_names=("logits",), dynamic_seq: bool = False) -> Path:
    module.eval()
    names = list(example)
    dynamic = {name: {0: "batch"} for name in names}
    if dynamic_seq:
        for name in names:
            dynamic[name][1] = "sequence"
    for out in output_names:
        dynamic[out] = {0: "batch"}
    args = tuple(torch.from_numpy(example[name]) for name in names)
    with warnings.catch_warnings():  # the TorchScript exporter on purpose: many shipped graphs come from it
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export",
                                DeprecationWarning)
        torch.onnx.export(module, args, str(path), input_names=names, output_names=list(output_names),
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    return path


def cnn_inputs(rows=16, seed=0):
    return {"image": np.random.default_rng(seed).normal(size=(rows, 1, 8, 8)).astype(np.float32)}


def token_inputs(rows=16, seq=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(rows, seq), dtype=np.int64)
    mask = (np.arange(seq)[None, :] < rng.integers(3, seq + 1, size=(rows, 1))).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def feature_inputs(rows=16, seed=0):
    return {"features": np.random.default_rng(seed).normal(size=(rows, 6)).astype(np.float32)}

def results_frame() -> pd.DataFrame:
    """Rows shaped like Study.results: ok rows, one error row, one reference row."""
    def row(name, family, p99, tput, size, quality, drop, status="ok", **extra):
        return dict(candidate=name, recipe=name, family=family, runtime="torch", device="cpu",
                    p50_ms=p99 * 0.7, p95_ms=p99 * 0.9, p99_ms=p99, throughput_per_s=tput, size_mb=size,
                    peak_rss_mb=250.0, cold_start_ms=800.0, metric="accuracy", quality=quality,
                    quality_drop=drop, quality_drop_ci_low=drop - 0.005, quality_drop_ci_high=drop + 0.005,
                    agreement=1 - drop, cost_per_1k_usd=0.1 / (3.6 * tput), cost_per_1m_usd=100 / (3.6 * tput),
                    status=status, error=None, cpu_model="AMD EPYC", cpu_flags="avx512f avx512_vnni", cores=2,
                    **extra)

    rows = [
        row("baseline", "baseline", 2.8, 4000.0, 1.2, 0.95, 0.0, sparsity=0.0),
        row("ort-int8", "quantization", 1.5, 8000.0, 0.4, 0.94, 0.01),
        row("prune-0.5", "pruning", 2.5, 4500.0, 0.7, 0.93, 0.02, sparsity=0.5),
        row("prune-0.8", "pruning", 2.3, 4700.0, 0.5, 0.85, 0.10, sparsity=0.8),
        dict(candidate="broken-int4", recipe="quantize(inc)", family="quantization", status="error",
             error="UnsupportedRecipe: <b>no INC</b>"),
        row("trt-fp16 [H100]", "compilation", 0.5, 50000.0, 1.0, 0.95, 0.0, status="reference"),
    ]
    return pd.DataFrame(rows)


def latency_samples() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    names = ["baseline", "ort-int8", "broken-int4", "trt-fp16 [H100]"]
    status = ["ok", "ok", "error", "reference"]
    return pd.DataFrame({"candidate": np.repeat(names, 40), "status": np.repeat(status, 40),
                         "latency_ms": rng.gamma(4.0, 0.5, 160)})


# --- ONNX graphs as other exporters write them (onnx.helper; issue 13) -----------------------------------

def _onnx_dim(name: str, dims) -> object:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def _save_onnx(nodes, inputs, outputs, path: Path, *, initializers=(), opset: int = 17, ml: bool = False) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(list(nodes), "optlab-test", list(inputs), list(outputs),
                              initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="optlab.testing")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def _constant(name: str, array: np.ndarray):
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array.astype(np.float32), name),
                            name=f"{name}_const")


def constant_weight_mlp_onnx(path: Path, *, features: int = 16, hidden: int = 32, classes: int = 4,
                             batch_dim: int | str = "N", scaler: bool = False, seed: int = 0) -> Path:
    """An MLP whose weights and biases are `Constant` nodes, not initializers (as several exporters
    write them): x[batch, features] -> MatMul/Add/Relu -> MatMul/Add -> logits[batch, classes].
    `batch_dim=-1` writes the batch axis as `dim_value: -1`; `scaler=True` puts an ai.onnx.ml
    `Scaler` in front (as sklearn-onnx writes it): ONNX Runtime runs it, but its quantization
    pre-processing fails on it ("Incomplete symbolic shape inference")."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(0, 0.5, (features, hidden)), rng.normal(0, 0.1, hidden)
    w2, b2 = rng.normal(0, 0.5, (hidden, classes)), rng.normal(0, 0.1, classes)
    nodes = [_constant("w1", w1), _constant("b1", b1), _constant("w2", w2), _constant("b2", b2),
             helper.make_node("MatMul", ["xs" if scaler else "x", "w1"], ["h0"], name="mm1"),
             helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
             helper.make_node("MatMul", ["h2", "w2"], ["o0"], name="mm2"),
             helper.make_node("Add", ["o0", "b2"], ["logits"], name="add2")]
    if scaler:
        nodes.insert(0, helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", name="scaler",
                                         offset=[0.0] * features, scale=[1.0] * features))
    return _save_onnx(nodes, [_onnx_dim("x", [batch_dim, features])], [_onnx_dim("logits", [batch_dim, classes])],
                      path, ml=scaler)


def constant_weight_mlp_inputs(rows: int = 64, features: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=(rows, features)).astype(np.float32)}


def streaming_onnx(path: Path, *, features: int = 16, state: int = 8, classes: int = 4, seed: int = 0) -> Path:
    """A streaming model: x[N, features], a scalar int64 sample rate `sr`, and a recurrent state
    `state[2, N, state]` batched on axis 1 -> logits[N, classes] and the next state[2, N, state]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (features, state)).astype(np.float32), "w_in"),
             numpy_helper.from_array(rng.normal(0, 0.5, (state, classes)).astype(np.float32), "w_out"),
             numpy_helper.from_array(np.array(16000.0, dtype=np.float32), "sr_ref")]
    nodes = [helper.make_node("ReduceMean", ["state"], ["s_mean"], axes=[0], keepdims=0),
             helper.make_node("MatMul", ["x", "w_in"], ["xin"]),
             helper.make_node("Add", ["xin", "s_mean"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["h"]),
             helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["sr_f", "sr_ref"], ["scale"]),
             helper.make_node("Mul", ["h", "scale"], ["hs"]),
             helper.make_node("MatMul", ["hs", "w_out"], ["logits"]),
             helper.make_node("Unsqueeze", ["h", "zero"], ["h1"]),
             helper.make_node("Concat", ["h1", "h1"], ["state_out"], axis=0)]
    inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"))
    inputs = [_onnx_dim("x", ["N", features]), helper.make_tensor_value_info("sr", TensorProto.INT64, []),
              _onnx_dim("state", [2, "N", state])]
    outputs = [_onnx_dim("logits", ["N", classes]), _onnx_dim("state_out", [2, "N", state])]
    return _save_onnx(nodes, inputs, outputs, path, initializers=inits)


def streaming_inputs(rows: int = 32, features: int = 16, state: int = 8, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(rows, features)).astype(np.float32), "sr": np.array(16000, dtype=np.int64),
            "state": rng.normal(size=(2, rows, state)).astype(np.float32)}


def sequence_onnx(path: Path, *, steps: int = 8, features: int = 6, classes: int = 5, seed: int = 0) -> Path:
    """A text-recognition-like head: x[N, steps, features] -> scores[N, steps, classes] (per-step class scores)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 1.0, (features, classes)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"])]
    return _save_onnx(nodes, [_onnx_dim("x", ["N", steps, features])], [_onnx_dim("scores", ["N", steps, classes])],
                      path, initializers=[w])


def dense_map_onnx(path: Path, *, size: int = 8, seed: int = 0) -> Path:
    """A detection-like head: image[N, 1, size, size] -> prob[N, 1, size, size] (a per-pixel probability map)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 1.0, (1, 1, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["z"], ["prob"])]
    return _save_onnx(nodes, [_onnx_dim("image", ["N", 1, size, size])], [_onnx_dim("prob", ["N", 1, size, size])],
                      path, initializers=[w])
