"""Recipes: validation, names, JSON round trips, Chain order, the registry and UnsupportedRecipe."""
import dataclasses

import pytest

from optlab.recipes import recipe as recipes
from optlab.recipes.recipe import Chain, Compile, Distill, Prune, Quantize, from_json

ALL = [
    Quantize("bf16"), Quantize("bf16", autocast=True), Quantize("dynamic-int8"),
    Quantize("static-int8", runtime="onnxruntime", calibration="entropy", per_channel=True,
             calibration_samples=64, calibration_data="skewed"),
    Quantize("weight-only-int4", runtime="inc", algorithm="gptq", group_size=-1),
    Quantize("autotune", runtime="inc", tolerable_loss=0.02),
    Compile(), Compile("openvino"), Compile("torch.compile", mode="max-autotune", freezing=False, dynamic=False),
    Prune(0.5, structured=True), Distill(temperature=2.0, alpha=0.5, epochs=3),
    Chain(Prune(0.3), Quantize("static-int8", runtime="onnxruntime"), Compile(graph_level="basic")),
]


@pytest.mark.parametrize("recipe", ALL, ids=lambda r: r.name)
def test_json_round_trip_keeps_recipe_and_name(recipe):
    again = from_json(recipe.to_json())
    assert again == recipe
    assert again.name == recipe.name


def test_names_are_stable_and_readable():
    name = Quantize("static-int8", runtime="onnxruntime", calibration="entropy").name
    assert name.startswith("quantize(") and "scheme=static-int8" in name and "runtime=onnxruntime" in name
    assert "calibration=entropy" in name and "per_channel" not in name  # defaults stay out
    assert name == Quantize("static-int8", runtime="onnxruntime", calibration="entropy").name
    assert Quantize("bf16").name != Quantize("bf16", autocast=True).name
    assert Compile().name.startswith("compile(")
    chain = Chain(Quantize("static-int8", runtime="onnxruntime"), Compile(graph_level="basic"))
    assert chain.name == " -> ".join(step.name for step in chain.steps)


@pytest.mark.parametrize("make, field, value", [
    (lambda: Quantize("int3"), "scheme", "int3"),
    (lambda: Quantize("bf16", runtime="tensorrt"), "runtime", "tensorrt"),
    (lambda: Quantize("static-int8", runtime="torch"), "scheme", "static-int8"),
    (lambda: Quantize("static-int8", runtime="onnxruntime", calibration="kl"), "calibration", "kl"),
    (lambda: Quantize("static-int8", runtime="onnxruntime", calibration_data="biased"), "calibration_data", "biased"),
    (lambda: Compile(graph_level="max"), "graph_level", "max"),
    (lambda: Compile(provider="rocm"), "provider", "rocm"),
])
def test_bad_choices_name_field_value_and_allowed(make, field, value):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert f".{field}={value!r}" in message and "choose one of" in message


@pytest.mark.parametrize("make, field", [
    (lambda: Quantize("static-int8", runtime="onnxruntime", calibration_samples=0), "calibration_samples"),
    (lambda: Quantize("autotune", runtime="inc", tolerable_loss=1.5), "tolerable_loss"),
    (lambda: Quantize("weight-only-int4", runtime="inc", group_size=0), "group_size"),
    (lambda: Prune(1.0), "sparsity"),
])
def test_out_of_range_names_the_field_and_range(make, field):
    with pytest.raises(ValueError, match=rf"\.{field}=.*out of range.*must be"):
        make()


def test_autocast_only_for_torch_half_precision():
    with pytest.raises(ValueError, match="autocast"):
        Quantize("dynamic-int8", autocast=True)


def test_recipes_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Quantize("bf16").scheme = "fp16"


def test_chain_order_error_names_both_steps():
    import re

    with pytest.raises(ValueError, match=rf"Chain order: {re.escape(Prune(0.5).name)}.*cannot follow "
                                         rf"{re.escape(Compile().name)}"):
        Chain(Compile(), Prune(0.5))
    with pytest.raises(ValueError, match="at least one recipe"):
        Chain()
    with pytest.raises(ValueError, match="not nested chains"):
        Chain(Chain(Compile()))


def test_unknown_kind_in_json_lists_valid_kinds():
    with pytest.raises(ValueError, match="unknown recipe kind 'sparsify'.*quantize"):
        recipes.from_dict({"kind": "sparsify"})


def test_parse_is_the_inverse_of_name():
    from optlab.recipes.recipe import Chain, Compile, Distill, Prune, Quantize, parse

    for recipe in [Quantize("static-int8", runtime="onnxruntime", calibration="entropy", per_channel=True),
                   Compile("openvino"), Prune(0.5, structured=True), Distill(temperature=2.0),
                   Distill(from_scratch=True), Chain(Prune(0.3), Quantize("dynamic-int8", runtime="onnxruntime"))]:
        assert parse(recipe.name) == recipe


def test_parse_names_what_is_wrong():
    import pytest

    from optlab.recipes.recipe import parse

    with pytest.raises(ValueError, match="kind one of"):
        parse("squash(level=3)")
    with pytest.raises(ValueError, match="not field=value with a field of Quantize"):
        parse("quantize(bits=4)")


@pytest.mark.parametrize("make, field", [
    (lambda: Quantize("bf16", per_channel=True), "per_channel"),
    (lambda: Quantize("dynamic-int8", runtime="onnxruntime", calibration="entropy"), "calibration"),
    (lambda: Quantize("weight-only-int4", runtime="inc", tolerable_loss=0.1), "tolerable_loss"),
    (lambda: Quantize("fp16", runtime="onnxruntime", group_size=64), "group_size"),
    (lambda: Compile("openvino", provider="cuda"), "provider"),
    (lambda: Compile("onnxruntime", mode="max-autotune"), "mode"),
    (lambda: Compile("torch.compile", graph_level="basic"), "graph_level"),
])
def test_fields_that_do_not_apply_are_refused_at_construction(make, field):
    with pytest.raises(ValueError, match=rf"\.{field}=.* does not apply here .*leave it at its default"):
        make()


def test_fields_that_apply_are_accepted():
    assert Quantize("static-int8", runtime="onnxruntime", calibration="entropy", per_channel=True)
    assert Quantize("weight-only-int4", runtime="inc", algorithm="gptq", calibration_samples=64, group_size=64)
    assert Compile("torch.compile", mode="max-autotune", freezing=False, dynamic=True)


def test_to_dict_holds_only_what_is_set_and_round_trips():
    recipe = Quantize("static-int8", runtime="onnxruntime", per_channel=True)
    assert recipe.to_dict() == {"kind": "quantize", "scheme": "static-int8", "runtime": "onnxruntime",
                                "per_channel": True}
    assert recipes.from_json(recipe.to_json()) == recipe


def test_adding_a_defaulted_field_keeps_the_fingerprint():
    from dataclasses import dataclass, field

    from optlab.study import fingerprint

    def key(recipe):
        return fingerprint.fingerprint(fingerprint.key(recipe_json=recipe.to_json(), model="m", data="d",
                                                       workload=None, machine_info={}))

    saved = dict(recipes._RECIPE_KINDS)
    try:
        @dataclass(frozen=True)
        class Before(recipes.Recipe):
            kind = "fingerprint-test"
            strength: float = 0.5

        @dataclass(frozen=True)
        class After(recipes.Recipe):  # the next release adds a field with a default
            kind = "fingerprint-test"
            strength: float = 0.5
            new_knob: tuple = field(default=())

        assert key(Before()) == key(After()) and key(Before(0.7)) == key(After(0.7))
        assert key(After(0.7, new_knob=(1,))) != key(Before(0.7))
    finally:
        recipes._RECIPE_KINDS.clear()
        recipes._RECIPE_KINDS.update(saved)
