"""The Cascade recipe: nested recipes round-trip through JSON and the command line's parser, and bad
fields are refused in one line that names the fix."""
import pytest

from optlab.recipes import Cascade, Chain, Compile, Distill, Prune, Quantize, from_json, parse

CASCADES = [
    Cascade(cheap=Distill()),
    Cascade(cheap=Chain(Distill(), Quantize("dynamic-int8", runtime="onnxruntime")), confidence="margin",
            max_quality_drop=0.01),
    Cascade(cheap=Prune(0.8, finetune_epochs=0), expensive=Compile(graph_level="basic"), threshold=0.9),
    Cascade(cheap=Distill(temperature=2.0), confidence="distance", decision=0.1, threshold=1.0),
]


@pytest.mark.parametrize("recipe", CASCADES, ids=lambda r: r.name)
def test_nested_recipes_round_trip_through_json_and_the_parser(recipe):
    assert from_json(recipe.to_json()) == recipe
    assert parse(recipe.name) == recipe
    assert parse(recipe.name).name == recipe.name
    assert isinstance(from_json(recipe.to_json()).cheap, type(recipe.cheap))


def test_the_name_holds_the_cheap_models_recipe_and_the_cli_spelling_reads():
    recipe = parse("cascade(cheap=distill() -> compile(runtime=onnxruntime), threshold=0.95)")
    assert recipe == Cascade(cheap=Chain(Distill(), Compile()), threshold=0.95)
    assert "cheap=distill(temperature=4) -> compile(runtime=onnxruntime)" in recipe.name
    assert parse("distill() -> compile()") == Chain(Distill(), Compile())  # a plain chain still splits


@pytest.mark.parametrize("make, words", [
    (lambda: Cascade(cheap=Distill(), threshold=1.5), "threshold"),
    (lambda: Cascade(cheap=Distill(), confidence="entropy"), "confidence"),
    (lambda: Cascade(cheap=Distill(), decision=0.2), "decision"),  # only for confidence='distance'
    (lambda: Cascade(cheap=Distill(), threshold=0.9, max_quality_drop=0.02), "max_quality_drop"),
    (lambda: Cascade(cheap=Cascade(cheap=Distill())), "itself a cascade"),
    (lambda: Cascade(cheap=None), "required"),
    (lambda: Cascade(cheap=3), "must be a recipe"),
    (lambda: Chain(Cascade(cheap=Distill()), Compile()), "cannot be a Chain step"),
])
def test_bad_fields_are_refused_in_one_line(make, words):
    with pytest.raises(ValueError) as error:
        make()
    assert words in str(error.value) and "\n" not in str(error.value)
