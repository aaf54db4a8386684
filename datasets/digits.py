"""digits: scikit-learn's bundled 8x8 handwritten digits, enlarged by seeded augmentation.

The 1,797 real images are split by ORIGINAL image first (so no augmented copy of a test
image reaches train), then each split is enlarged with random sub-pixel shifts, small
rotations and Gaussian pixel noise. Images stay 8x8, scaled to [0, 1].
"""
from __future__ import annotations

import numpy as np

VERSION = 1
# Fixed before any model was tuned on it (see datasets/README.md).
PARAMS = {
    "split_fractions": {"train": 0.6, "validation": 0.1, "test": 0.3},
    "copies": {"train": 10, "validation": 5, "test": 5},  # per original image, the original included
    "max_shift_px": 0.8,
    "max_rotation_deg": 10.0,
    "noise_std": 0.03,
}


def _augment(images: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """`copies` versions of each image: the original, then shifted/rotated/noisy copies."""
    from scipy import ndimage

    out = np.empty((images.shape[0], copies, 8, 8), np.float32)
    centre = np.array([3.5, 3.5])
    for i, image in enumerate(images):
        out[i, 0] = image
        for c in range(1, copies):
            angle = np.deg2rad(rng.uniform(-PARAMS["max_rotation_deg"], PARAMS["max_rotation_deg"]))
            shift = rng.uniform(-PARAMS["max_shift_px"], PARAMS["max_shift_px"], size=2)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            offset = centre - rot @ centre - shift
            moved = ndimage.affine_transform(image, rot, offset=offset, order=1, mode="constant", cval=0.0)
            moved = moved + rng.normal(0.0, PARAMS["noise_std"], size=moved.shape)
            out[i, c] = np.clip(moved, 0.0, 1.0)
    return out.reshape(-1, 8, 8)


def generate(seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays keyed "split/name" (pixels, labels, source) and JSON-able meta."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = (raw.images / 16.0).astype(np.float32)
    targets = raw.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    fr = PARAMS["split_fractions"]
    n_train = int(round(fr["train"] * len(order)))
    n_val = int(round(fr["validation"] * len(order)))
    parts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    arrays: dict[str, np.ndarray] = {}
    for split, idx in parts.items():
        copies = PARAMS["copies"][split]
        pixels = _augment(images[idx], copies, rng)
        labels = np.repeat(targets[idx], copies)
        source = np.repeat(idx, copies)  # index of the original sklearn image
        copy = np.tile(np.arange(copies), len(idx))  # 0 = the original itself
        shuffle = rng.permutation(len(labels))
        arrays[f"{split}/pixels"] = pixels[shuffle][:, None, :, :]
        arrays[f"{split}/labels"] = labels[shuffle]
        arrays[f"{split}/source"] = source[shuffle].astype(np.int64)
        arrays[f"{split}/copy"] = copy[shuffle].astype(np.int64)
    meta = {"params": PARAMS, "classes": [str(d) for d in range(10)],
            "originals": {k: int(len(v)) for k, v in parts.items()}}
    return arrays, meta
