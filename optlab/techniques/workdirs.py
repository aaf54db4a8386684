"""Where technique artifacts go: a work folder per call and readable, unique file names.

Every working file a toolkit writes (exported graphs, saved modules, INC's nc_workspace)
lands under the work folder, never in the caller's current directory.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path


def resolve_workdir(workdir: str | os.PathLike | None) -> Path:
    """`workdir`, or a fresh folder under $OPTLAB_CACHE (else the system temp dir)."""
    if workdir is None:
        root = Path(os.environ.get("OPTLAB_CACHE", tempfile.gettempdir())) / "artifacts"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="optlab-", dir=root))
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_file(workdir: Path, name: str, suffix: str) -> Path:
    """A readable, unique file name for a recipe name, e.g. quantize-scheme-bf16-1a2b3c.pt."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:80]
    digest = hashlib.sha1(name.encode()).hexdigest()[:6]
    return workdir / f"{slug}-{digest}{suffix}"
