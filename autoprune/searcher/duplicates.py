"""Each plan is tried once: a drawn plan that another trial holds is closed and a new neighbour runs instead.

A sampler can draw parameters that a trial holds already: TPE converging on a good
region does it by chance, and workers sharing a study draw independently. Optuna
would score the same plan again and count it against the budget. Here a trial whose
drawn parameters equal those of a completed trial, or of a running trial with a lower
number (so that of two workers drawing the same plan at once, one goes on), is closed
as PRUNED with the user attribute ``duplicate_of``, and a neighbour of the plan that no
trial holds is queued in its place (each grid parameter one step up or down, a
categorical one another choice: a local move, as in Optuna's FAQ on avoiding repeated
parameters). Queued trials the study chose itself (its baselines, warm starts and the
retry of a trial a killed worker left with all its parameters drawn) are never closed:
they are deliberate.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ..results.record import StudyRecord

_logger = logging.getLogger("autoprune")

#: Neighbours drawn before the search gives up looking for an untried plan (and lets the repeat run).
ATTEMPTS = 200


def params_key(params: Mapping[str, Any]) -> tuple:
    """What identifies a trial's parameters (floats to 9 decimals: the grid's values as stored)."""
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


def chosen_by_the_study(record: StudyRecord, trial: FrozenTrial) -> bool:
    """Whether the trial's parameters were all queued by the study (a baseline, a warm start, the retry of a
    trial whose parameters were all drawn)."""
    fixed = trial.system_attrs.get("fixed_params") or {}
    return set(trial.params) <= set(fixed) and record.stands_in_for(trial) is None


def holder(record: StudyRecord, trial: optuna.Trial) -> int | None:
    """The number of the trial that holds ``trial``'s parameters already, or None."""
    others = record.trials(states=(TrialState.COMPLETE, TrialState.RUNNING))
    me = next((t for t in others if t.number == trial.number), None)
    if me is None or chosen_by_the_study(record, me):
        return None
    mine = params_key(me.params)
    for other in others:
        if other.number == trial.number:
            continue
        if (other.state == TrialState.COMPLETE or other.number < trial.number) and params_key(other.params) == mine:
            return other.number
    return None


def close_if_duplicate(record: StudyRecord, trial: optuna.Trial, seed: int) -> None:
    """Close ``trial`` (PRUNED, ``duplicate_of``) when another trial holds its parameters, with an untried
    neighbour of them queued in its place; when every neighbour tried is taken, the repeat runs (logged)."""
    of = holder(record, trial)
    if of is None:
        return
    every = record.trials()
    taken = {params_key(t.params) for t in every if t.params}
    taken |= {params_key(t.system_attrs["fixed_params"]) for t in every if "fixed_params" in t.system_attrs}
    found = neighbour(trial.params, trial.distributions, taken, random.Random(f"{seed}:{trial.number}"))
    if found is None:
        _logger.warning(
            "trial %d drew the parameters of trial %d and no untried plan is near them: it runs again",
            trial.number,
            of,
        )
        return
    record.write_duplicate(trial, of)
    record.enqueue(found, replaces=trial.number)
    raise optuna.TrialPruned(f"its parameters are those of trial {of}")


def neighbour(
    params: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    taken: set[tuple],
    rng: random.Random,
    attempts: int = ATTEMPTS,
) -> dict[str, Any] | None:
    """Parameters near ``params`` that no key in ``taken`` holds: one parameter moved, then more as the
    attempts fail; None when every attempt lands on a taken plan (a space nearly exhausted)."""
    names = [n for n in params if _moves(distributions[n], params[n])]
    if not names:
        return None
    for attempt in range(attempts):
        moved = dict(params)
        for name in rng.sample(names, min(len(names), 1 + attempt // 20)):
            moved[name] = rng.choice(_moves(distributions[name], moved[name]))
        if params_key(moved) not in taken:
            return moved
    return None


def _moves(distribution: BaseDistribution, value: Any) -> list[Any]:
    """The values one step from ``value`` that ``distribution`` allows."""
    if isinstance(distribution, CategoricalDistribution):
        return [c for c in distribution.choices if c != value]
    if isinstance(distribution, (FloatDistribution, IntDistribution)) and distribution.step is not None:
        step, low, high = distribution.step, distribution.low, distribution.high
        near = [value - step, value + step]
        if isinstance(distribution, FloatDistribution):  # back onto the grid, as Optuna stores its values
            near = [round(low + round((v - low) / step) * step, 10) for v in near]
        return [v for v in near if low - 1e-9 <= v <= high + 1e-9 and not math.isclose(v, value)]
    return []
