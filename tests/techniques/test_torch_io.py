"""Which recipes need a torch.nn.Module: one table in techniques.torch_io, asked by the CLI too."""
import pytest

from optlab.models.candidate import OnnxModel
from optlab.recipes.recipe import Chain, Compile, Distill, OnDevice, Prune, Quantize, UnsupportedRecipe
from optlab.techniques.torch_io import needs_module, require_module


@pytest.mark.parametrize("recipe", [Prune(0.5), Distill(), Quantize("bf16"),
                                    Quantize("weight-only-int8", runtime="inc"), Compile(runtime="torch.compile"),
                                    OnDevice(),
                                    Chain([Prune(0.5), Compile(runtime="onnxruntime")])])
def test_torch_level_recipes_say_why_they_need_a_module(recipe):
    assert needs_module(recipe)
    with pytest.raises(UnsupportedRecipe, match=r"works on a torch.nn.Module \(.+\) but got an ONNX model"):
        require_module(OnnxModel("model.onnx", ("x",), ("y",)), recipe)


@pytest.mark.parametrize("recipe", [Quantize("dynamic-int8", runtime="onnxruntime"), Compile(runtime="onnxruntime"),
                                    Compile(runtime="openvino")])
def test_graph_level_recipes_take_an_onnx_model(recipe):
    assert needs_module(recipe) is None


def test_the_cli_asks_the_techniques():
    from optlab.cli.main import _torch_only

    assert _torch_only(Prune(0.5)) == f"a PyTorch model ({needs_module(Prune(0.5))})"
    assert _torch_only(Compile(runtime="onnxruntime")) is None
