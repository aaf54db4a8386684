"""What a torch module's weights are: their digest (the identity caches and fingerprints use)
and their parameter count. One owner, so every cache key and every row agrees."""
from __future__ import annotations

import hashlib
import io
from typing import Any


def digest(module: Any) -> str:
    """sha256 hex of a module's class and its state_dict (names, dtypes, shapes and bytes).

    Tensor subclasses that cannot be viewed as bytes (packed or quantized weights) are hashed
    through their `torch.save` serialization."""
    import torch

    hasher = hashlib.sha256()
    hasher.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        hasher.update(name.encode())
        if not isinstance(tensor, torch.Tensor):
            hasher.update(repr(tensor).encode())
            continue
        hasher.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        try:
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            hasher.update(flat.view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):
            buffer = io.BytesIO()
            torch.save(tensor, buffer)
            hasher.update(buffer.getvalue())
    return hasher.hexdigest()


def param_count(module: Any) -> int:
    """Number of parameters (buffers such as BatchNorm statistics excluded)."""
    return int(sum(p.numel() for p in module.parameters()))
