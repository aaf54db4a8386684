"""The one verb: `apply` dispatches by recipe type and runtime to the handler modules."""
from dataclasses import dataclass

import pytest

from optlab.recipes import recipe as recipes
from optlab.recipes.recipe import Compile, Quantize, UnsupportedRecipe
from optlab.techniques import registry
from optlab.techniques.registry import apply, register


def test_registry_dispatches_by_type_and_runtime():
    from optlab.techniques import compile as compile_module
    from optlab.techniques import inc, ort_quantize, quantize

    assert registry.handler(Quantize, "torch") is quantize.apply_torch_quantize
    assert registry.handler(Quantize, "onnxruntime") is ort_quantize.apply_ort_quantize
    assert registry.handler(Quantize, "inc") is inc.apply_inc
    assert registry.handler(Compile, "onnxruntime") is compile_module.apply_onnxruntime
    assert registry.handler(Compile, "openvino") is compile_module.apply_openvino
    assert registry.handler(Compile, "torch.compile") is compile_module.apply_torch_compile


def test_a_runtime_nobody_handles_is_unsupported():
    with pytest.raises(UnsupportedRecipe, match="no technique is registered for Quantize with runtime='tvm'"):
        registry.handler(Quantize, "tvm")


def test_register_and_apply_custom_recipe(tmp_path):
    @dataclass(frozen=True)
    class Noop(recipes.Recipe):
        kind = "noop-test"

        @property
        def stage(self):
            return recipes.STAGE_RUNTIME

    class Built:
        meta: dict = {}

    seen = {}

    @register(Noop)
    def apply_noop(recipe, model, data, *, threads=None, workdir=None):
        seen.update(model=model, threads=threads, workdir=workdir)
        built = Built()
        built.meta = {}
        return built

    try:
        built = apply(Noop(), "model", None, threads=3, workdir=tmp_path)
        assert seen == {"model": "model", "threads": 3, "workdir": tmp_path}
        assert built.meta["threads"] == 3 and built.meta["apply_s"] >= 0
    finally:
        recipes._RECIPE_KINDS.pop("noop-test", None)
        registry._APPLIERS.pop((Noop, None), None)


def test_apply_rejects_non_recipes():
    with pytest.raises(TypeError, match="needs a Recipe"):
        apply("bf16", None, None)
