"""Small real datasets and models for technique tests and for the techniques bench until
optlab.models.zoo / optlab.data provide the reference ones: sklearn's digits (real images) and a
synthetic click-through table shaped like bids (categorical ids + numeric features)."""
from __future__ import annotations

import numpy as np

from optlab.data.datasets import Dataset, Split


def _splits(inputs: dict[str, np.ndarray], labels: np.ndarray, seed: int) -> dict[str, Split]:
    n = len(labels)
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([int(n * 0.6), int(n * 0.1), int(n * 0.2)])
    parts = np.split(order, cuts)
    names = ("train", "validation", "test", "calibration")
    return {name: Split({k: v[np.sort(p)] for k, v in inputs.items()}, labels[np.sort(p)])
            for name, p in zip(names, parts, strict=False)}


def digits_dataset(seed: int = 0, rows: int | None = None) -> Dataset:
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = (raw.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = raw.target.astype(np.int64)
    if rows:
        pixels, labels = pixels[:rows], labels[:rows]
    s = _splits({"pixels": pixels}, labels, seed)
    return Dataset("digits", "multiclass", 10, s["train"], s["validation"], s["test"], s["calibration"],
                   requests=[s["test"].take(slice(i, i + 1)).inputs for i in range(8)])


def bids_dataset(seed: int = 0, rows: int = 20000, vocab: tuple[int, ...] = (5000, 2000, 500, 50),
                 numeric: int = 8) -> Dataset:
    rng = np.random.default_rng(seed)
    cats = np.stack([np.minimum(rng.zipf(1.3, rows) - 1, v - 1) for v in vocab], axis=1).astype(np.int64)
    nums = rng.normal(size=(rows, numeric)).astype(np.float32)
    effects = [np.random.default_rng(seed + i).normal(0, 0.8, v) for i, v in enumerate(vocab)]
    logit = sum(e[cats[:, i]] for i, e in enumerate(effects)) + nums[:, 0] - 0.5 * nums[:, 1] * nums[:, 2] - 2.0
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    s = _splits({"categorical": cats, "numeric": nums}, labels, seed)
    return Dataset("bids", "binary", 2, s["train"], s["validation"], s["test"], s["calibration"],
                   requests=[s["test"].take(slice(i, i + 1)).inputs for i in range(8)], meta={"vocab": vocab})


try:  # module-level classes so torch.save'd candidates load in a fresh process
    import torch
    from torch import nn

    class DigitsNet(nn.Module):
        """A small CNN (conv + MLP head) for 8x8 digits: exercises Conv and Gemm."""

        def __init__(self, width: int = 256, conv: bool = True):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU()) if conv else nn.Identity()
            channels = 16 if conv else 1
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 64, width), nn.ReLU(),
                                      nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(pixels))

    class BidsNet(nn.Module):
        """Embedding tables (most of the bytes) + an MLP -> one click logit."""

        def __init__(self, vocab=(5000, 2000, 500, 50), numeric: int = 8, dim: int = 32, width: int = 256):
            super().__init__()
            self.embeddings = nn.ModuleList(nn.Embedding(v, dim) for v in vocab)
            self.mlp = nn.Sequential(nn.Linear(len(vocab) * dim + numeric, width), nn.ReLU(),
                                     nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, 1))

        def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
            parts = [table(categorical[:, i]) for i, table in enumerate(self.embeddings)]
            return self.mlp(torch.cat(parts + [numeric], dim=1)).squeeze(1)
except ImportError:  # torch-free import of this module stays possible
    pass


def digits_model(width: int = 256, conv: bool = True):
    return DigitsNet(width, conv).eval()


def bids_model(vocab: tuple[int, ...] = (5000, 2000, 500, 50), numeric: int = 8, dim: int = 32, width: int = 256):
    return BidsNet(vocab, numeric, dim, width).eval()


def train(model, data: Dataset, epochs: int = 3, lr: float = 3e-3, batch_size: int = 128, seed: int = 0):
    """A plain Adam loop, enough for a model that is better than chance."""
    import torch

    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss() if data.task == "binary" else torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(data.train))
        for start in range(0, len(order), batch_size):
            rows = data.train.take(np.sort(order[start:start + batch_size]))
            inputs = {k: torch.from_numpy(v) for k, v in rows.inputs.items()}
            labels = torch.from_numpy(rows.labels)
            optimizer.zero_grad()
            loss_fn(model(**inputs), labels).backward()
            optimizer.step()
    return model.eval()


def reference(name: str, smoke: bool = False, seed: int = 0):
    """(model, data, source): optlab.models.zoo's reference model when it exists, else a local one."""
    try:
        import importlib

        data_module = importlib.import_module("optlab.data.datasets")
        zoo = importlib.import_module("optlab.models.zoo")

        data = data_module.load(name, smoke=smoke, seed=seed)
        return zoo.get(name, smoke=smoke, seed=seed, data=data), data, "optlab.models.zoo"
    except (ImportError, AttributeError, NotImplementedError):
        pass
    if name == "digits":
        data = digits_dataset(seed)
        return train(digits_model(), data, epochs=2 if smoke else 8), data, "local (zoo not available)"
    data = bids_dataset(seed, rows=5000 if smoke else 40000)
    return train(bids_model(), data, epochs=1 if smoke else 2), data, "local (zoo not available)"
