"""instruments.generation: how many misses settle a p99 for certain, checked against np.quantile itself."""
from __future__ import annotations

import numpy as np
import pytest

from optlab.instruments.generation import misses_for_certain


@pytest.mark.parametrize("n", [1, 2, 12, 64, 99, 100, 101, 662])
def test_that_many_misses_put_the_p99_over_the_limit_whatever_the_others_are_and_one_fewer_need_not(n):
    k = misses_for_certain(n)
    rng = np.random.default_rng(n)
    for _ in range(20):
        values = rng.uniform(0, 1, n)  # every value within a limit of 1 ...
        values[:k] = rng.uniform(1.001, 2, k)  # ... except k, which miss it
        assert np.quantile(values, 0.99) > 1
    if k > 1:  # k - 1 misses just over the limit, the rest far under it: the p99 can still be within
        values = np.zeros(n)
        values[: k - 1] = 1.0001
        assert np.quantile(values, 0.99) <= 1
    assert (misses_for_certain(64), misses_for_certain(662)) == (2, 8)
    with pytest.raises(ValueError, match="n >= 1"):
        misses_for_certain(0)
