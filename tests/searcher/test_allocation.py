"""Scope "allocation": a level and per-group coefficients resolved into rates over the sensitivity curves."""

from __future__ import annotations

import copy

import optuna
import pytest

from autoprune import SearchSettings, search
from autoprune.errors import AutopruneError
from autoprune.plan import ALLOCATION_LEVEL, PlanSpace, coefficient_param
from autoprune.plan.space import ALLOCATION_LEVELS, allocation_share
from autoprune.searcher import Evaluator
from autoprune.searcher.allocation import WARM_LEVELS, Allocation, coefficient
from autoprune.searcher.optimize import study_allocation

pytestmark = pytest.mark.baseline("standard")

#: Two groups of 16 channels: "cheap" loses little and saves much, "dear" the opposite.
ROWS = [
    {"group": "cheap", "rate": 0.25, "accuracy_drop": 0.2, "flops": 70, "params": 0},
    {"group": "cheap", "rate": 0.5, "accuracy_drop": 0.5, "flops": 50, "params": 0},
    {"group": "cheap", "rate": 0.75, "accuracy_drop": 1.5, "flops": 35, "params": 0},
    {"group": "dear", "rate": 0.25, "accuracy_drop": 0.6, "flops": 90, "params": 0},
    {"group": "dear", "rate": 0.5, "accuracy_drop": 1.6, "flops": 80, "params": 0},
]
SIZES = {"cheap": (16, 1), "dear": (16, 1)}


def _allocation(**settings) -> Allocation:
    options = {"max_accuracy_drop": 1.0, "round_to": 1, "rate_step": 0.125, "rate_max": 0.75, **settings}
    space = PlanSpace(SearchSettings(**options), ("cheap", "dear"))
    return Allocation(space, ROWS, SIZES, 100.0, "flops", 1.0)


def _spent(allocation: Allocation, rates: dict[str, float], coefficients: dict[str, int]) -> float:
    options = allocation.options
    return sum(coefficient(coefficients.get(g, 0)) * {r: d for r, d, _ in options[g]}[rates[g]] for g in rates)


def test_the_dynamic_program_spends_the_share_where_the_curves_save_the_most():
    allocation = _allocation()
    # the curves interpolated on the grid: cheap at 0.625 spends the budget for 57.5 FLOPs, more than cheap
    # at 0.5 and dear at 0.125 (0.8 points for 55) or any other pair
    assert allocation.rates(1.0, {}) == {"cheap": 0.625, "dear": 0.0}
    for level in range(*ALLOCATION_LEVELS):
        rates = allocation.rates(allocation_share(level), {})
        more = allocation.rates(allocation_share(level + 1), {})
        assert _spent(allocation, rates, {}) <= allocation_share(level) + 1e-9
        saved = allocation.saving(allocation.space.plan(rates))
        assert allocation.saving(allocation.space.plan(more)) >= saved  # a larger share never saves less


def test_a_larger_coefficient_makes_a_group_dearer_and_never_raises_its_rate():
    allocation = _allocation()
    rates = [allocation.rates(1.5, {"cheap": k})["cheap"] for k in range(-4, 5)]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    scaled = allocation.rates(1.5, {"cheap": 4})
    assert _spent(allocation, scaled, {"cheap": 4}) <= 1.5 + 1e-9


def test_a_curve_point_past_its_limit_bounds_the_group_and_rates_that_keep_the_same_channels_are_one_option():
    allocation = _allocation(round_to=8)
    # 16 channels rounded to 8: rates below 0.5 keep all 16 and 0.5 to 0.75 keep 8, so one option besides none
    assert [r for r, _, _ in allocation.options["cheap"]] == [0.0, 0.5]
    plain = _allocation()
    # dear's curve stops at 0.5 (1.6 points is past twice the budget): nothing beyond it is offered
    assert max(r for r, _, _ in plain.options["dear"]) == 0.5


def test_allocation_parameters_round_trip_through_a_trial(baseline, digits):
    result = search(
        copy.deepcopy(baseline), digits, max_accuracy_drop=2.0, trials=12, scope="allocation", calibration_batches=4
    )
    record = result.record
    groups = record.groups
    allocation = study_allocation(record, Evaluator.build(copy.deepcopy(baseline), digits, record.settings))
    complete = record.completed()
    assert len(complete) == 12
    baselines, trials = complete[:2], complete[2:]
    # the uniform and global baselines come first, exactly as found
    assert [record.plan(t).rates for t in baselines] == [record.references[k]["plan"] for k in ("uniform", "global")]
    assert [t.params[ALLOCATION_LEVEL] for t in trials[: len(WARM_LEVELS)]] == [
        level for level in WARM_LEVELS if level not in {t.params[ALLOCATION_LEVEL] for t in baselines}
    ][: len(trials)]
    for trial in complete:
        assert set(trial.params) == {ALLOCATION_LEVEL} | {coefficient_param(g) for g in groups}
    for trial in trials:
        plan = record.plan(trial)
        level = trial.params[ALLOCATION_LEVEL]
        coefficients = {g: trial.params[coefficient_param(g)] for g in groups}
        assert allocation.plan(allocation_share(level), coefficients) == plan
        params = record.space.allocation_params(level, coefficients)  # written back, read again
        assert params == trial.params
        assert record.space.suggest(optuna.trial.FixedTrial(params), allocation=allocation) == plan
    with pytest.raises(AutopruneError, match="allocation scope needs its resolved"):
        record.space.decode(trials[-1].params)


def test_a_drop_that_falls_at_a_higher_rate_is_taken_as_the_drop_below_it():
    rows = [
        {"group": "cheap", "rate": 0.25, "accuracy_drop": 0.6, "flops": 70, "params": 0},
        {"group": "cheap", "rate": 0.5, "accuracy_drop": -0.2, "flops": 50, "params": 0},  # noise: not free
        {"group": "dear", "rate": 0.25, "accuracy_drop": 0.1, "flops": 95, "params": 0},
    ]
    space = PlanSpace(
        SearchSettings(max_accuracy_drop=1.0, round_to=1, rate_step=0.25, rate_max=0.5), ("cheap", "dear")
    )
    allocation = Allocation(space, rows, SIZES, 100.0, "flops", 1.0)
    assert [d for _, d, _ in allocation.options["cheap"]] == [0.0, 0.6, 0.6]
    assert allocation.rates(0.5, {}) == {"cheap": 0.0, "dear": 0.25}  # 0.6 points do not fit half a budget
