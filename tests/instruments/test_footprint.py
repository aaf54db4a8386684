"""Parameter counts and zero fractions of torch modules and ONNX files."""
import torch
from torch.nn.utils import prune

from optlab.instruments.footprint import footprint
from optlab.models.candidate import OnnxModel


def test_torch_module_counts_and_pruned_zeros():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.ReLU(), torch.nn.Linear(10, 2))
    assert footprint(model) == (132, 0.0)
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    count, zeros = footprint(model)
    assert count == 132 and zeros == 50 / 132


def test_onnx_file_initializers(tmp_path):
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[0].zero_()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.zeros(1, 4),), str(path), dynamo=False)
    count, zeros = footprint(OnnxModel(path))
    assert count == 15 and zeros >= 4 / 15
    assert footprint(None, path)[0] == 15
    assert footprint(None, tmp_path / "nothing.bin") == (None, None)
