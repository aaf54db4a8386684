"""Content hashes: the one place optlab turns values, files and folders into sha256 digests.

The study's fingerprints, the on-disk cache's sidecars and a user dataset's identity all use
these, so the same bytes always give the same digest.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def sha256_json(value: Any) -> str:
    """sha256 hex of a JSON-able value (keys sorted, compact; unknown types as `str`)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 hex of one file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of every file under a folder (relative names included)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"cannot fingerprint {path}: it does not exist or holds no files")
    for file in files:
        digest.update(os.fsencode(file.relative_to(path) if file != path else file.name))
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
