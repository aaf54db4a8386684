"""Fingerprints: what a stored result depends on, hashed, so a re-run can skip it safely.

A row's fingerprint is sha256 over the recipe JSON, the model's bytes, the data's
fingerprint, the workload and the machine (device, CPU model and flags, and the versions
of torch, onnxruntime and optlab). Change any of them and the row is measured again.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import sys
from typing import Any

from optlab import __version__
from optlab.data.hashing import sha256_json, sha256_tree
from optlab.instruments.environment import cpu_info, package_version
from optlab.models import weights
from optlab.models.candidate import Candidate, OnnxModel

file_fingerprint = sha256_tree


def model_fingerprint(model: Any) -> str:
    """sha256 of a model: a torch module's state_dict bytes (plus its class), an ONNX file's
    bytes (`OnnxModel` or a path), or a Candidate's model / artifact."""

    if isinstance(model, Candidate):
        if model.model is not None:
            return model_fingerprint(model.model)
        if model.artifact_path is not None:
            return file_fingerprint(model.artifact_path)
        raise ValueError(f"cannot fingerprint candidate {model.name!r}: it has neither a model nor an "
                         f"artifact_path; give the Candidate its model (e.g. zoo.baseline(module))")
    if isinstance(model, OnnxModel):
        return file_fingerprint(model.path)
    if isinstance(model, (str, os.PathLike)):
        return file_fingerprint(model)
    if hasattr(model, "state_dict"):

        return weights.digest(model)
    raise TypeError(f"cannot fingerprint a {type(model).__name__}; pass a torch.nn.Module, an OnnxModel, "
                    f"a file path or a Candidate")


def workload_key(workload: Any) -> Any:
    """A JSON-able description of the workload (every field of the dataclass)."""
    if workload is None:
        return None
    if dataclasses.is_dataclass(workload) and not isinstance(workload, type):
        return {"type": type(workload).__name__, **dataclasses.asdict(workload)}
    if hasattr(workload, "to_dict"):
        return workload.to_dict()
    return repr(workload)


def _device() -> str:
    """'cpu', or 'cuda:<name>' when a GPU is visible to torch (torch imported only if present)."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


@functools.lru_cache(maxsize=1)
def machine() -> dict[str, Any]:
    """What a measurement depends on about this machine and its software."""

    cpu_model, flags = cpu_info()
    return {
        "device": _device(),
        "cpu_model": cpu_model,
        "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest(),
        "cores": os.cpu_count(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "python": ".".join(map(str, sys.version_info[:2])),
        "torch_version": package_version("torch"),
        "onnxruntime_version": package_version("onnxruntime"),
        "optlab_version": __version__,
    }


def key(*, recipe_json: str, model: str, data: str, workload: Any, machine_info: dict[str, Any]) -> dict[str, Any]:
    """The parts a row's fingerprint is made of (stored next to the row to explain a re-run)."""
    return {"recipe": json.loads(recipe_json), "model": model, "data": data,
            "workload": workload_key(workload), "machine": machine_info}


def fingerprint(parts: dict[str, Any]) -> str:
    """sha256 hex of `key(...)` output."""
    return sha256_json(parts)


def explain_difference(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Which top-level parts of two keys differ (e.g. ['model', 'machine.torch_version'])."""
    changed = []
    for part in sorted(set(old) | set(new)):
        a, b = old.get(part), new.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{part}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(part)
    return changed
