"""Local refinement: the last share of a search's trials are moves of its best feasible plan."""

from __future__ import annotations

import copy
import random

import optuna
import pytest
from optuna.distributions import IntDistribution

from autoprune import SearchSettings, search
from autoprune.plan import ALLOCATION_LEVEL
from autoprune.searcher.duplicates import params_key
from autoprune.searcher.refinement import REFINED_FROM, LocalRefinement, SavingEstimate, move, pruning_direction

pytestmark = pytest.mark.baseline("standard")


def _incumbent(record, before: int):
    """The trial the study would deliver from its trials numbered below ``before``."""
    feasible = [t for t in record.feasible() if t.number < before]
    return min(feasible, key=lambda t: (t.value, -record.value(t, "accuracy"), t.number))


def test_the_last_trials_move_the_best_plan_to_more_pruning_without_repeating_a_model(baseline, digits):
    trials, refine = 20, 0.5
    result = search(
        copy.deepcopy(baseline),
        digits,
        max_accuracy_drop=3.0,
        trials=trials,
        refine=refine,
        importances=("l1",),
        warm_start="sensitivity",
        calibration_batches=4,
    )
    record = result.record
    complete = record.completed()
    assert len(complete) == trials
    start = int(trials * (1 - refine))
    moves = 0
    for trial in complete:
        if REFINED_FROM not in trial.system_attrs:
            continue  # before the refinement, queued by the study, or no move was left: the sampler's
        assert trial.number >= start
        origin = result.study.trials[trial.system_attrs[REFINED_FROM]]
        assert origin.number < trial.number and record.is_feasible(origin)
        assert origin.number == _incumbent(record, trial.number).number  # the best feasible plan when it started
        changed = {k for k in trial.params if trial.params[k] != origin.params[k]}
        directions = {k: pruning_direction(k, trial.distributions[k]) for k in changed}
        assert changed and all(directions.values())  # only what sets how much is pruned moved
        moves += 1
        assert record.plan(trial) != record.plan(origin)
        towards = [k for k in changed if directions[k] * (trial.params[k] - origin.params[k]) > 0]
        assert towards  # some parameter moved towards more pruning
    assert moves >= (trials - start) // 2
    # no model is scored twice: every drawn trial's plan is new
    seen = {}
    for trial in complete:
        plan = record.plan(trial)
        key = (tuple(sorted(plan.rates.items())), tuple(sorted(plan.methods.items())))
        if "fixed_params" not in trial.system_attrs:
            assert key not in seen, f"trial {trial.number} repeats trial {seen.get(key)}"
        seen.setdefault(key, trial.number)
    assert result.best_trial.value <= _incumbent(record, start).value


class _Curves:
    """Structures of a toy allocation space: a plan is its parameters; a higher level saves 10 per step, a
    lower coefficient 1."""

    def key(self, params):
        return params_key(params)

    def saves(self, params):
        return 10 * params[ALLOCATION_LEVEL] - sum(v for k, v in params.items() if k.endswith(".coefficient"))


def test_an_allocation_move_raises_the_level_or_lowers_a_coefficient_and_saves_more():
    distributions = {ALLOCATION_LEVEL: IntDistribution(-8, 4)}
    distributions.update({f"g{i}.coefficient": IntDistribution(-4, 4) for i in range(3)})
    params = {ALLOCATION_LEVEL: 0, "g0.coefficient": 0, "g1.coefficient": 4, "g2.coefficient": -4}
    taken = {params_key(params)}
    seen = set()
    for seed in range(20):
        moved = move(params, distributions, taken, random.Random(seed), _Curves())
        assert moved is not None and params_key(moved) not in taken
        assert _Curves().saves(moved) > _Curves().saves(params)
        changed = {k: moved[k] - params[k] for k in moved if moved[k] != params[k]}
        assert 1 <= len(changed) <= 2 and all(abs(v) == 1 for v in changed.values())
        seen |= set(changed)
    assert ALLOCATION_LEVEL in seen and "g1.coefficient" in seen  # the level up, a coefficient down
    most = {ALLOCATION_LEVEL: 4, **{f"g{i}.coefficient": -4 for i in range(3)}}  # nothing prunes more
    assert move(most, distributions, {params_key(most)}, random.Random(0), _Curves()) is None


def test_refinement_starts_at_its_share_of_the_trials_and_leaves_a_multi_objective_study_to_its_sampler():
    settings = SearchSettings(max_accuracy_drop=1.0, trials=4, refine=0.5)
    sampler = LocalRefinement(optuna.samplers.RandomSampler(seed=0), keys=None, settings=settings)
    single = optuna.create_study(sampler=sampler)
    multi = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
    for study in (single, multi):
        study.ask()
    assert not sampler.refines(single, 1)  # 1 of 4 trials started: the sampler's
    for study in (single, multi):
        study.ask()
    assert sampler.refines(single, 2) and not sampler.refines(multi, 2)  # the last half: moves, in one objective


def test_the_saving_estimate_interpolates_each_curve_and_extends_its_last_slope():
    estimate = SavingEstimate({"a": [(0.2, 10.0), (0.4, 30.0)], "b": [(0.5, 5.0)]})
    assert estimate.at("a", 0.1) == pytest.approx(5.0)
    assert estimate.at("a", 0.3) == pytest.approx(20.0)
    assert estimate.at("a", 0.6) == pytest.approx(50.0)  # past the curve: its last slope, 100 per unit rate
    assert estimate.total({"a": 0.2, "b": 0.25, "c": 0.9}) == pytest.approx(12.5)  # c has no curve
