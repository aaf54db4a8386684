"""What an OpenVINO IR really stores: each weight matrix's element type, read from the graph.

NNCF decides per layer: with int4 it keeps the embedding and the output head in int8 unless told
otherwise, puts `1 - ratio` of the layers in int8, and skips a layer it cannot group. A row that says
"int4" must show how much of the model is int4, so the IR is read back (`openvino.Core().read_model`):
a weight matrix is the largest constant behind a MatMul's or an embedding Gather's weight input, found
by walking up through the decompression ops NNCF inserts (Convert, Subtract of a zero point, Multiply by
a scale, Reshape of the groups); its element type (u4/i4, u8/i8, f16, f32) is the precision it is stored
at. Activations never pass through such a chain, so attention's activation x activation MatMuls are not
counted.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# OpenVINO element types -> the precision a person reads
STORAGE = {"u4": "int4", "i4": "int4", "u8": "int8", "i8": "int8", "f16": "fp16", "bf16": "bf16", "f32": "fp32"}
_DECOMPRESSION = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}


@dataclass(frozen=True)
class Matrix:
    """One weight matrix of the IR: its constant's name, its role ("linear", "lm_head", "embedding", or
    "embedding+lm_head" when tied), its element type and precision, and its element count."""

    name: str
    role: str
    element_type: str
    elements: int

    @property
    def storage(self) -> str:
        return STORAGE.get(self.element_type, self.element_type)


@dataclass(frozen=True)
class IRWeights:
    """The weight matrices of one IR and its constants counted by element type."""

    matrices: tuple[Matrix, ...]
    constants: dict[str, int]  # the matrices' constants (weights, scales, zero points) by element type

    def share(self, storage: str) -> float:
        """The share of the weight matrices' elements stored at `storage` ("int4", "int8", "fp32")."""
        total = sum(m.elements for m in self.matrices)
        return sum(m.elements for m in self.matrices if m.storage == storage) / total if total else 0.0

    def count(self, storage: str) -> int:
        return sum(m.storage == storage for m in self.matrices)

    def describe(self, claimed: str) -> str:
        """One line: how many matrices hold the `claimed` precision and what the others hold, e.g.
        "int4 on 14 of 16 matrices (79% of weight elements); int8: embedding, lm_head"."""
        n, total = self.count(claimed), len(self.matrices)
        head = f"{claimed} on {n} of {total} matrices ({self.share(claimed):.0%} of weight elements)"
        others: dict[str, list[str]] = collections.defaultdict(list)
        for m in self.matrices:
            if m.storage != claimed:
                others[m.storage].append(m.role)
        parts = [f"{storage}: {_roles(roles)}" for storage, roles in sorted(others.items())]
        return "; ".join([head, *parts])


def _roles(roles: list[str]) -> str:
    counts = collections.Counter(roles)
    return ", ".join(role if k == 1 else f"{k} {role} layers" for role, k in sorted(counts.items()))


def inspect_ir(folder: str | os.PathLike) -> IRWeights:
    """Read `folder`'s `openvino_model.xml` and report every weight matrix's stored precision."""
    import openvino as ov  # lazy: heavy

    model = ov.Core().read_model(str(Path(folder, "openvino_model.xml")))
    head = _output_head(model)
    found: dict[str, tuple[Any, set[str]]] = {}
    parts: dict[str, str] = {}  # every constant of a matrix's chain (the matrix, scales, zero points) -> type
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        positions = (0,) if kind == "Gather" else (0, 1) if kind == "MatMul" else ()
        for position in positions:
            leaves = _constant_leaves(node.input_value(position).get_node())
            weight = max(leaves, key=_elements) if leaves else None
            if weight is None or not _is_matrix(weight):
                continue
            role = "embedding" if kind == "Gather" else "lm_head" if node.get_name() == head else "linear"
            found.setdefault(weight.get_friendly_name(), (weight, set()))[1].add(role)
            parts.update({leaf.get_name(): leaf.get_element_type().get_type_name() for leaf in leaves})
    matrices = tuple(Matrix(name, "+".join(sorted(roles)), weight.get_element_type().get_type_name(),
                            _elements(weight)) for name, (weight, roles) in found.items())
    return IRWeights(matrices, dict(collections.Counter(t for t in parts.values() if t in STORAGE)))


def _is_matrix(node: Any) -> bool:
    """Two or more dimensions longer than 1 (a weight matrix, possibly split into groups), unlike a vector
    of rotary frequencies or a scale."""
    return sum(int(dim) > 1 for dim in node.get_output_shape(0)) >= 2


def _elements(node: Any) -> int:
    count = 1
    for dim in node.get_output_shape(0):
        count *= int(dim)
    return count


def _constant_leaves(node: Any) -> list[Any] | None:
    """The constants behind `node` when everything upstream of it is constants and decompression ops
    (a stored weight); None when an activation flows in."""
    leaves, stack, seen = [], [node], set()
    while stack:
        current = stack.pop()
        if current.get_name() in seen:
            continue
        seen.add(current.get_name())
        kind = current.get_type_name()
        if kind == "Constant":
            leaves.append(current)
        elif kind in _DECOMPRESSION:
            stack += [value.get_node() for value in current.input_values()]
        else:
            return None
    return leaves


def _output_head(model: Any) -> str | None:
    """The name of the MatMul nearest the "logits" output (the output head, which NNCF keeps in its backup
    precision unless told otherwise)."""
    results = [r for r in model.get_results() if "logits" in r.output(0).get_names() or
               "logits" in r.input_value(0).get_names()]
    stack = [r.input_value(0).get_node() for r in results or model.get_results()[:1]]
    seen = set()
    while stack:
        node = stack.pop(0)
        if node.get_name() in seen:
            continue
        seen.add(node.get_name())
        if node.get_type_name() == "MatMul":
            return node.get_name()
        stack += [value.get_node() for value in node.input_values()]
    return None
