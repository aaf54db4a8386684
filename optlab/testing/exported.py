"""Torch models of the shapes analysts bring, exported to real ONNX files with torch.onnx.export:
a CNN, a two-input token classifier, a two-headed model and a scores-only model, with inputs."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
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
