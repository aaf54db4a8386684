"""optlab.recipes.sweeps: recipe ranges for accuracy-vs-sparsity / temperature / student-size curves."""
import pytest

from optlab.recipes.recipe import Chain, Distill, Prune, Quantize
from optlab.recipes.sweeps import SPARSITIES, sweep


def test_sweep_sparsity_keeps_other_fields():
    recipes = sweep(Prune(0.5, structured=True), sparsity=SPARSITIES)
    assert [r.sparsity for r in recipes] == list(SPARSITIES)
    assert all(r.structured for r in recipes)
    assert len({r.name for r in recipes}) == len(recipes)


def test_sweep_grid_order_and_dedup():
    recipes = sweep(Distill(), temperature=[1.0, 4.0], alpha=[0.5, 0.9, 0.9])
    assert [(r.temperature, r.alpha) for r in recipes] == [(1.0, 0.5), (1.0, 0.9), (4.0, 0.5), (4.0, 0.9)]


def test_sweep_student_size():
    recipes = sweep(Distill(), student=["student", "tiny"])
    assert [r.student for r in recipes] == ["student", "tiny"]


def test_sweep_chain_changes_only_steps_with_the_field():
    chain = Chain(Distill(), Prune(0.5), Quantize("dynamic-int8"))
    recipes = sweep(chain, sparsity=[0.2, 0.7])
    assert [r.steps[1].sparsity for r in recipes] == [0.2, 0.7]
    assert all(r.steps[0] == chain.steps[0] and r.steps[2] == chain.steps[2] for r in recipes)


def test_sweep_bad_inputs():
    with pytest.raises(ValueError, match="sparsity"):
        sweep(Prune(0.5), sparsity=[0.5, 1.0])  # validated by the recipe
    with pytest.raises(ValueError, match="no such field"):
        sweep(Prune(0.5), temperature=[1.0])
    with pytest.raises(ValueError, match="list of values"):
        sweep(Prune(0.5), sparsity=0.5)
    with pytest.raises(ValueError, match="at least one range"):
        sweep(Prune(0.5))
