"""The on-disk cache for generated data and trained models, every file checked by a sha256 sidecar.

`$OPTLAB_CACHE` (default `~/.cache/optlab`) holds it. Files are written to a temporary
name and renamed into place, then a `<file>.sha256` sidecar is written; a reader trusts a
file only when the sidecar matches, so a truncated or altered file is rebuilt, not loaded.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from optlab.data.hashing import sha256_file


def cache_dir(*parts: str) -> Path:
    """The cache root (or a folder in it), created on demand."""
    root = Path(os.environ.get("OPTLAB_CACHE") or Path.home() / ".cache" / "optlab").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_valid(path: Path) -> bool:
    """True when `path` and its sidecar exist and the file's sha256 matches the sidecar."""
    path = Path(path)
    side = _sidecar(path)
    if not path.is_file() or not side.is_file():
        return False
    try:
        return side.read_text().split()[0] == sha256_file(path)
    except (OSError, IndexError):
        return False


def write_checked(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, move the result to `path` atomically, then write its sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fd, tmp_side = tempfile.mkstemp(prefix=path.name + ".", suffix=".sha256.tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(f"{digest}  {path.name}\n")
    os.replace(tmp_side, _sidecar(path))
    for p in (path, _sidecar(path)):
        os.chmod(p, 0o644)
    return path


def invalidate(path: Path) -> None:
    """Remove a cache file and its sidecar (missing ones are fine)."""
    for p in (Path(path), _sidecar(Path(path))):
        p.unlink(missing_ok=True)
