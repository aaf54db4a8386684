"""Small real datasets and models for technique tests: sklearn's digits (real 8x8 images) with a
small CNN, and a synthetic click-through table (categorical ids + numeric features) with an
embedding MLP. Classes live at module level so torch.save'd candidates load in a fresh process;
`trained` fits them with the project's own training loop."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from optlab.data.datasets import Dataset, Split
from optlab.models.runtimes import torch_predict_fn
from optlab.models.training import train

# torch and sklearn are imported inside the builders: heavy imports that a test using only frames must
# not pay for.


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


def _seeded(build, seed: int):
    """`build()` with torch's RNG seeded, the caller's RNG state restored: the initial weights are
    the same whatever ran before (a session fixture is built by whichever test asks first, after
    however many random draws earlier tests made; `trained` seeds only the training loop)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def digits_model(width: int = 256, conv: bool = True, seed: int = 0):
    return _seeded(lambda: DigitsNet(width, conv), seed).eval()


def bids_model(vocab: tuple[int, ...] = (5000, 2000, 500, 50), numeric: int = 8, dim: int = 32, width: int = 256,
               seed: int = 0):
    return _seeded(lambda: BidsNet(vocab, numeric, dim, width), seed).eval()


def trained(model, data: Dataset, epochs: int = 3, lr: float = 3e-3, batch_size: int = 128, seed: int = 0):
    """`model` fitted on `data.train` with optlab's training loop (seeded; the caller's RNG and
    thread count are left as they were), in eval mode."""
    train(model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return model.eval()


def assert_close_to_model(candidate, model, data, max_abs: float, min_agreement: float, rows: int = 128) -> None:
    """A candidate's outputs on the first test rows stay within `max_abs` (relative to the logit
    scale) of the torch model's, float32 and the same shape; class scores keep >= `min_agreement`
    top-1 agreement."""
    batch = {k: v[:rows] for k, v in data.test.inputs.items()}
    expected = torch_predict_fn(model)(batch)
    got = candidate.predict(batch)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= max_abs * max(1.0, np.abs(expected).max())
    if expected.ndim == 2:
        assert (got.argmax(1) == expected.argmax(1)).mean() >= min_agreement
