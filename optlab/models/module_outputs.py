"""Torch wrappers that give optlab one flat (N, width) output: a module returning several outputs
(a tuple, a dict, a dataclass such as transformers' ModelOutput), and a save_pretrained classifier.

Torch is imported at module level: this module is only imported once a torch module is wrapped.
The wrappers are module-level classes so that they pickle (recipes save whole modules).
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import torch

from optlab.models.training import to_tensors


def named_outputs(output: Any) -> list[tuple[str, Any]]:
    """[(name, tensor)] of a forward()'s result: a tensor is "output0"; a tuple or list "output0",
    "output1", ...; a dict (or ModelOutput) its keys; a dataclass its fields. None entries (an
    optional output not computed) are left out; anything else that is not a tensor is refused."""
    if isinstance(output, torch.Tensor):
        return [("output0", output)]
    if isinstance(output, Mapping):
        items = [(str(k), v) for k, v in output.items()]
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = [(f.name, getattr(output, f.name)) for f in dataclasses.fields(output)]
    elif isinstance(output, (tuple, list)):
        items = [(f"output{i}", v) for i, v in enumerate(output)]
    else:
        raise TypeError(f"the module returned a {type(output).__name__}; from_module takes a tensor, or a "
                        f"tuple, dict or dataclass of tensors")
    items = [(name, value) for name, value in items if value is not None]
    wrong = [f"{name} ({type(value).__name__})" for name, value in items if not isinstance(value, torch.Tensor)]
    if wrong:
        raise TypeError(f"the module's outputs {', '.join(wrong)} are not tensors; return tensors with the batch "
                        f"on axis 0 (wrap the module to drop caches or nested tuples)")
    if not items:
        raise TypeError("the module returned no tensors")
    return items


class FlatOutputs(torch.nn.Module):
    """`inner(**inputs)`'s outputs flattened per row and concatenated, in `names` order."""

    def __init__(self, inner: torch.nn.Module, names: list[str]):
        super().__init__()
        self.inner = inner
        self.names = tuple(names)

    def forward(self, **inputs):
        found = dict(named_outputs(self.inner(**inputs)))
        parts = [found[name] for name in self.names]
        return torch.cat([p.reshape(p.shape[0], -1).float() for p in parts], dim=1)


class FolderClassifier(torch.nn.Module):
    """A save_pretrained sequence classifier returning logits. The Hugging Face model sits in
    `.bert` (whatever its architecture), where the optimum handler finds the zoo's BERT."""

    def __init__(self, hf):
        super().__init__()
        self.bert = hf
        self.takes_token_types = "token_type_ids" in inspect.signature(hf.forward).parameters

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None and self.takes_token_types else {}
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def describe(module: torch.nn.Module, sample: dict[str, Any]) -> tuple[list[str], list[tuple[int, ...]], bool]:
    """Names and per-row shapes of the module's outputs on a sample batch, and whether it returned
    a single tensor (which needs no wrapper)."""

    with torch.inference_mode():
        output = module(**to_tensors(sample))
    items = named_outputs(output)
    shapes = [tuple(int(d) for d in value.shape[1:]) for _, value in items]
    return [name for name, _ in items], shapes, isinstance(output, torch.Tensor)
