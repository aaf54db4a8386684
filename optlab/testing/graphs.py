"""ONNX graphs written the way other exporters write them, built with onnx.helper: weights as
Constant nodes, a -1 batch dimension, a scalar input with a state batched on axis 1, sequence and
dense-map outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# onnx is imported inside the builders: a heavy import that tests not building graphs must not pay
# for.


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


def resize_detector_onnx(path: Path, *, blocks: int = 100, channels: int = 8, size: int = 16, opset: int = 11,
                         bias: float = 0.0, seed: int = 0) -> Path:
    """A text-detector-like graph as older exporters write it: opset 11, a stack of 1x1 Conv + Relu
    blocks (2 initializers each, a few hundred in all), a `Resize` by 2 and a Sigmoid map:
    image[N, 1, size, size] -> prob[N, 1, 2 size, 2 size]. ORT's `quant_pre_process`, handed it as
    a ModelProto, moves every initializer to external data in place and then fails on `Resize`.
    A negative `bias` pushes the map below 0.5 everywhere (an empty detection map)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (channels, 1, 3, 3)).astype(np.float32), "w0")]
    nodes = [helper.make_node("Conv", ["image", "w0"], ["h0"], pads=[1, 1, 1, 1], name="conv0")]
    for i in range(1, blocks + 1):
        weight = np.eye(channels)[:, :, None, None] + rng.normal(0, 0.1, (channels, channels, 1, 1))
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.05, channels).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [f"h{i - 1}", f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"h{i}"], name=f"relu{i}")]
    inits += [numpy_helper.from_array(np.array([], dtype=np.float32), "roi"),
              numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"),
              numpy_helper.from_array(rng.normal(0, 0.5, (1, channels, 1, 1)).astype(np.float32), "w_out"),
              numpy_helper.from_array(np.array([bias], dtype=np.float32), "b_out")]
    nodes += [helper.make_node("Resize", [f"h{blocks}", "roi", "scales"], ["up"], mode="nearest", name="resize"),
              helper.make_node("Conv", ["up", "w_out", "b_out"], ["z"], name="conv_out"),
              helper.make_node("Sigmoid", ["z"], ["prob"], name="sigmoid")]
    return _save_onnx(nodes, [_onnx_dim("image", ["N", 1, size, size])],
                      [_onnx_dim("prob", ["N", 1, 2 * size, 2 * size])], path, initializers=inits, opset=opset)


def image_inputs(rows: int = 16, size: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).uniform(0, 1, (rows, 1, size, size)).astype(np.float32)}


def streaming_if_onnx(path: Path, *, features: int = 16, state: int = 8, classes: int = 4, seed: int = 0) -> Path:
    """A streaming model whose body sits inside `If` branches (as voice-activity exporters write
    it): x[N, features], a scalar int64 sample rate `sr` choosing the branch, a recurrent
    `state[2, N, state]` batched on axis 1 and read only inside the branches -> logits[N, classes]
    and the next state, whose every dimension the graph leaves dynamic."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (features, state)).astype(np.float32), "w_in"),
             numpy_helper.from_array(rng.normal(0, 0.5, (state, classes)).astype(np.float32), "w_out"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
             numpy_helper.from_array(np.array(8000, dtype=np.int64), "sr_split")]

    def branch(tag: str, scale: float):
        nodes = [helper.make_node("ReduceMean", ["state"], [f"{tag}_mean"], axes=[0], keepdims=0),
                 helper.make_node("MatMul", ["x", "w_in"], [f"{tag}_xin"]),
                 helper.make_node("Add", [f"{tag}_xin", f"{tag}_mean"], [f"{tag}_pre"]),
                 helper.make_node("Constant", [], [f"{tag}_scale"],
                                  value=numpy_helper.from_array(np.array(scale, dtype=np.float32))),
                 helper.make_node("Mul", [f"{tag}_pre", f"{tag}_scale"], [f"{tag}_scaled"]),
                 helper.make_node("Tanh", [f"{tag}_scaled"], [f"{tag}_h"]),
                 helper.make_node("MatMul", [f"{tag}_h", "w_out"], [f"{tag}_logits"]),
                 helper.make_node("Unsqueeze", [f"{tag}_h", "zero"], [f"{tag}_h1"]),
                 helper.make_node("Concat", [f"{tag}_h1", f"{tag}_h1"], [f"{tag}_state"], axis=0)]
        outs = [helper.make_tensor_value_info(f"{tag}_logits", TensorProto.FLOAT, None),
                helper.make_tensor_value_info(f"{tag}_state", TensorProto.FLOAT, None)]
        return helper.make_graph(nodes, tag, [], outs)

    nodes = [helper.make_node("Greater", ["sr", "sr_split"], ["wide"]),
             helper.make_node("If", ["wide"], ["logits", "state_out"], then_branch=branch("then", 1.0),
                              else_branch=branch("else", 0.5), name="by_rate")]
    inputs = [_onnx_dim("x", ["N", features]), helper.make_tensor_value_info("sr", TensorProto.INT64, []),
              _onnx_dim("state", [2, "N", state])]
    outputs = [_onnx_dim("logits", ["N", classes]), _onnx_dim("state_out", [None, None, None])]
    return _save_onnx(nodes, inputs, outputs, path, initializers=inits, opset=13)
