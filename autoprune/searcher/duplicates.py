"""Each plan is tried once: a drawn plan that another trial holds is closed and a new neighbour runs instead.

A sampler can draw a plan that a trial holds already: TPE converging on a good
region does it by chance, workers sharing a study draw independently, and many
parameters give one model (rates that round to the same channel counts, coefficients
that resolve to the same rates). Optuna would score the same model again and count
it against the budget. Here plans are compared by the model they prune
(:meth:`~autoprune.plan.Plan.structure_key`: the channels each group keeps, the
importances of the groups that lose any, every other part), and by their parameters
(a baseline's grid point stands for an exact plan off the grid). A trial whose plan
or parameters are those of a completed trial, or of a running trial with a lower
number (so that of two workers drawing the same plan at once, one goes on), is
closed as PRUNED with the user attribute ``duplicate_of``, and a neighbour of its parameters whose plan no
trial holds is queued in its place (each grid parameter one step up or down, a
categorical one another choice: a local move, as in Optuna's FAQ on avoiding
repeated parameters; further when every near one is taken). Queued trials the study chose itself (its baselines and warm
starts) are never closed: they are deliberate. The retry of a trial a killed worker
left running is checked as a drawn trial is.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ..errors import AutopruneError
from ..plan import Plan
from ..results.record import StudyRecord

_logger = logging.getLogger("autoprune")

#: Neighbours drawn before the search gives up looking for an untried plan (and lets the repeat run).
ATTEMPTS = 200
#: Failed attempts after which a neighbour moves one more parameter (and, every second time, one step further).
WIDEN_EVERY = 20
#: Resolved plans :class:`PlanKeys` keeps (a few moves' or duplicates' worth of neighbours), so memory stays flat.
KEPT_PLANS = 2048


def params_key(params: Mapping[str, Any]) -> tuple:
    """What identifies a trial's parameters (floats to 9 decimals: the grid's values as stored)."""
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


class PlanKeys:
    """The structure key of each trial's plan (:meth:`~autoprune.plan.Plan.structure_key`), kept once a
    trial is finished. ``sizes``: the baseline's ``{group: (channels, channel groups)}``; ``resolve``: the
    plan of a set of parameters (None where they do not make one), for trials that hold only parameters
    (queued ones) and for neighbours."""

    def __init__(
        self,
        record: StudyRecord,
        sizes: Mapping[str, tuple[int, int]],
        resolve: Callable[[Mapping[str, Any]], Plan | None],
    ) -> None:
        self.record, self.sizes, self.resolve = record, sizes, resolve
        self._finished: dict[int, tuple] = {}
        self._plans: dict[tuple, Plan | None] = {}

    def of_plan(self, plan: Plan) -> tuple:
        return ("plan", plan.structure_key(self.sizes))

    def plan_of(self, params: Mapping[str, Any]) -> Plan | None:
        """``resolve(params)``, the last :data:`KEPT_PLANS` kept: the same parameters give the same plan for
        the whole study, and a duplicate's or a move's neighbours are resolved many times over."""
        key = params_key(params)
        if key not in self._plans:
            if len(self._plans) >= KEPT_PLANS:
                del self._plans[next(iter(self._plans))]  # the oldest
            self._plans[key] = self.resolve(params)
        return self._plans[key]

    def of_params(self, params: Mapping[str, Any]) -> tuple:
        plan = self.plan_of(params)
        return ("params", params_key(params)) if plan is None else self.of_plan(plan)

    def of_trial(self, trial: FrozenTrial) -> tuple:
        if trial.number in self._finished:
            return self._finished[trial.number]
        key = self._key(trial)
        if trial.state.is_finished():
            self._finished[trial.number] = key
        return key

    def _key(self, trial: FrozenTrial) -> tuple:
        if not trial.params:  # queued: its parameters (and maybe its exact plan) are all it has yet
            params = trial.system_attrs.get("fixed_params") or {}
            given = self.record.given_plan(trial)
            if given is not None:
                return self.of_plan(self.record.space.plan(given["rates"], given["methods"]))
            return self.of_params(params)
        try:
            return self.of_plan(self.record.plan(trial))
        except AutopruneError:  # a global or allocation trial that has not recorded its plan yet
            return self.of_params(trial.params)


def chosen_by_the_study(record: StudyRecord, trial: FrozenTrial) -> bool:
    """Whether the trial's parameters were all queued by the study: a baseline or a warm start. Not a
    stand-in for a closed duplicate, nor the retry of a trial a killed worker left running: the plan it runs
    again may have been scored since, or the worker may have died while closing it as a duplicate."""
    fixed = trial.system_attrs.get("fixed_params") or {}
    return set(trial.params) <= set(fixed) and record.stands_in_for(trial) is None and record.retries(trial) is None


def holder(record: StudyRecord, trial: optuna.Trial, plan: Plan, keys: PlanKeys) -> int | None:
    """The number of the trial that holds ``trial``'s plan (or its parameters) already, or None."""
    others = record.trials(states=(TrialState.COMPLETE, TrialState.RUNNING))
    me = next((t for t in others if t.number == trial.number), None)
    if me is None or chosen_by_the_study(record, me):
        return None
    mine, drawn = keys.of_plan(plan), params_key(me.params)
    for other in others:
        if other.number == trial.number or not (other.state == TrialState.COMPLETE or other.number < trial.number):
            continue
        # the same model, or the same parameters (a baseline's grid point, whose exact plan is another): the
        # sampler would learn two scores for one point
        if keys.of_trial(other) == mine or params_key(other.params) == drawn:
            return other.number
    return None


def close_if_duplicate(record: StudyRecord, trial: optuna.Trial, seed: int, plan: Plan, keys: PlanKeys) -> None:
    """Close ``trial`` (PRUNED, ``duplicate_of``) when another trial holds its plan, with a neighbour of its
    parameters whose plan no trial holds queued in its place; when every neighbour tried is taken, the
    repeat runs (logged)."""
    of = holder(record, trial, plan, keys)
    if of is None:
        return
    every = [t for t in record.trials() if t.number != trial.number]
    taken = {keys.of_trial(t) for t in every} | {keys.of_plan(plan)}
    held = {params_key(t.params) for t in every if t.params}  # the study queues no parameters twice
    held |= {params_key(t.system_attrs["fixed_params"]) for t in every if "fixed_params" in t.system_attrs}
    rng = random.Random(f"{seed}:{trial.number}")
    found = neighbour(trial.params, trial.distributions, taken, rng, key=keys.of_params, held=held)
    if found is None:
        _logger.warning(
            "trial %d drew the plan of trial %d and no untried plan is near its parameters: it runs again",
            trial.number,
            of,
        )
        return
    record.write_duplicate(trial, of)
    record.enqueue(found, replaces=trial.number)
    raise optuna.TrialPruned(f"its plan is that of trial {of}")


def neighbour(
    params: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    taken: set[tuple],
    rng: random.Random,
    attempts: int = ATTEMPTS,
    key: Callable[[Mapping[str, Any]], tuple] = params_key,
    held: set[tuple] = frozenset(),
) -> dict[str, Any] | None:
    """Parameters near ``params`` whose ``key`` is not in ``taken`` and whose :func:`params_key` is not in
    ``held``: one parameter moved one step, then more parameters, further, as the attempts fail (a point whose
    whole neighbourhood is taken, such as a corner of the space TPE converged on, still finds the nearest
    untried plans); None when every attempt lands on a taken plan (a space nearly exhausted)."""
    names = [n for n in params if _moves(distributions[n], params[n])]
    if not names:
        return None
    for attempt in range(attempts):
        moved, reach = dict(params), 1 + attempt // (2 * WIDEN_EVERY)
        for name in rng.sample(names, min(len(names), 1 + attempt // WIDEN_EVERY)):
            moved[name] = rng.choice(_moves(distributions[name], moved[name], reach))
        if params_key(moved) not in held and key(moved) not in taken:
            return moved
    return None


def _moves(distribution: BaseDistribution, value: Any, reach: int = 1) -> list[Any]:
    """The values ``distribution`` allows at most ``reach`` steps from ``value`` (a categorical one: every
    other choice)."""
    if isinstance(distribution, CategoricalDistribution):
        return [c for c in distribution.choices if c != value]
    if isinstance(distribution, (FloatDistribution, IntDistribution)) and distribution.step is not None:
        step, low, high = distribution.step, distribution.low, distribution.high
        near = [value + k * step for k in range(-reach, reach + 1) if k]
        if isinstance(distribution, FloatDistribution):  # back onto the grid, as Optuna stores its values
            near = [round(low + round((v - low) / step) * step, 10) for v in near]
        return [v for v in near if low - 1e-9 <= v <= high + 1e-9 and not math.isclose(v, value)]
    return []
