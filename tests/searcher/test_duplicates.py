import random

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from autoprune.searcher.duplicates import neighbour, params_key

GRID = FloatDistribution(0.0, 0.8, step=0.05)


def test_a_corner_whose_every_near_plan_is_taken_finds_the_nearest_untried_one():
    """Regression: only one-step moves were tried, so a corner of the space (TPE converged on the largest rates)
    whose three neighbours make the model it holds gave up and scored that model again."""
    corner = {"a": 0.8, "b": 0.8}
    taken = {params_key({"a": a, "b": b}) for a in (0.7, 0.75, 0.8) for b in (0.7, 0.75, 0.8)}
    found = neighbour(corner, {"a": GRID, "b": GRID}, taken, random.Random(0))
    assert found is not None and params_key(found) not in taken
    assert all(0.0 <= v <= 0.8 and round(v / 0.05, 6).is_integer() for v in found.values())  # on the grid
    assert max(abs(found[k] - corner[k]) for k in corner) <= 0.2  # near the corner, not anywhere


def test_a_neighbour_moves_one_step_first_and_none_is_found_when_the_space_is_exhausted():
    distributions = {"a": GRID, "m": CategoricalDistribution(["l1", "fpgm"])}
    start = {"a": 0.4, "m": "l1"}
    found = neighbour(start, distributions, {params_key(start)}, random.Random(1))
    moved = [k for k in start if found[k] != start[k]]
    assert len(moved) == 1 and (moved == ["m"] or abs(found["a"] - 0.4) == pytest.approx(0.05))
    every = {params_key({"a": round(i * 0.05, 10), "m": m}) for i in range(17) for m in ("l1", "fpgm")}
    assert neighbour(start, distributions, every, random.Random(1)) is None
