"""A row's fingerprint changes exactly when what it measured changes: recipe, model bytes, data,
workload or machine; the parts that differ are named."""
import copy

import pytest
import torch

from optlab.models.candidate import Candidate, OnnxModel
from optlab.recipes.recipe import Quantize
from optlab.study import fingerprint


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_a_module_fingerprint_follows_its_weights():
    model = _mlp()
    same = copy.deepcopy(model)
    assert fingerprint.model_fingerprint(model) == fingerprint.model_fingerprint(same)
    with torch.no_grad():
        same[0].weight[0, 0] += 1e-3
    assert fingerprint.model_fingerprint(model) != fingerprint.model_fingerprint(same)
    candidate = Candidate(name="c", predict_fn=lambda batch: batch, model=model)
    assert fingerprint.model_fingerprint(candidate) == fingerprint.model_fingerprint(model)


def test_an_onnx_model_is_fingerprinted_by_its_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"graph-v1")
    first = fingerprint.model_fingerprint(OnnxModel(path, ("x",), ("y",)))
    path.write_bytes(b"graph-v2")
    assert fingerprint.model_fingerprint(path) != first


def test_what_cannot_be_fingerprinted_says_what_to_pass():
    with pytest.raises(ValueError, match="neither a model nor an artifact_path"):
        fingerprint.model_fingerprint(Candidate(name="c", predict_fn=lambda batch: batch))
    with pytest.raises(TypeError, match="pass a torch.nn.Module, an OnnxModel"):
        fingerprint.model_fingerprint(42)


def test_changed_parts_are_named():
    machine = fingerprint.machine()
    assert machine["cpu_model"] and machine["cores"] >= 1 and len(machine["cpu_flags_sha256"]) == 64
    old = fingerprint.key(recipe_json=Quantize("bf16").to_json(), model="m1", data="d", workload=None,
                          machine_info=machine)
    new = fingerprint.key(recipe_json=Quantize("fp16").to_json(), model="m1", data="d", workload=None,
                          machine_info={**machine, "torch_version": "0.0"})
    assert fingerprint.explain_difference(old, new) == ["machine.torch_version", "recipe.scheme"]
    assert fingerprint.fingerprint(old) == fingerprint.fingerprint(copy.deepcopy(old))
    assert fingerprint.fingerprint(old) != fingerprint.fingerprint(new)
