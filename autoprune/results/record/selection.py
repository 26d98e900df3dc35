"""Which trials a study delivers: the feasible ones, the Pareto front, the chosen trial, and how a trial
compares with the study's baselines.

Kept beside the record as Optuna keeps ``_constrained_optimization.py`` and
``_multi_objective.py`` beside its study: these read trials, never write them.
A trial is feasible when it completed and recorded every constraint of the study
with a value <= 0 (Optuna's rule, which also refuses trials without constraints).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ...errors import AutopruneError

if TYPE_CHECKING:
    from .study_record import StudyRecord


def is_feasible(record: StudyRecord, trial: FrozenTrial) -> bool:
    """Completed, with every constraint of the study recorded and <= 0."""
    constraints = trial.constraints
    return (
        trial.state == TrialState.COMPLETE
        and all(c in constraints for c in record.constraint_names)
        and all(v <= 0 for v in constraints.values())
    )


def feasible(record: StudyRecord) -> list[FrozenTrial]:
    return [t for t in record.completed() if is_feasible(record, t)]


def pareto_trials(record: StudyRecord) -> list[FrozenTrial]:
    """The feasible trials no other feasible trial dominates, sorted by the size objective.

    Multi-objective: on the study's objectives and directions. Single objective:
    on accuracy (higher) and the objective (lower), so the front shows the trade-off.
    """
    candidates = feasible(record)
    directions = record.study.directions
    if len(directions) > 1:
        signs = [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in directions]
        points = {t.number: [s * v for s, v in zip(signs, t.values)] for t in candidates}
    else:
        points = {t.number: [-record.value(t, "accuracy"), t.value] for t in candidates}
    front = [t for t in candidates if not any(_dominates(points[o.number], points[t.number]) for o in candidates)]
    key = record.size_objective
    return sorted(front, key=lambda t: (record.value(t, key, math.inf), t.number))


def chosen_trial(record: StudyRecord) -> FrozenTrial | None:
    """The trial a search delivers: the feasible trial with the lowest objective (the more accurate of
    equals); in a multi-objective study, the feasible Pareto point with the highest accuracy. Either way
    it is on the Pareto front."""
    if len(record.study.directions) > 1:
        front = pareto_trials(record)
        return max(front, key=lambda t: (record.value(t, "accuracy"), -t.number)) if front else None
    return best_of(record, feasible(record))


def best_of(record: StudyRecord, candidates: list[FrozenTrial]) -> FrozenTrial | None:
    """Of ``candidates`` of a single-objective study, the one with the lowest objective (the more accurate of
    equals, then the first); None when there are none."""
    return min(candidates, key=lambda t: (t.value, -record.value(t, "accuracy"), t.number), default=None)


def trial(record: StudyRecord, number: int | None = None) -> FrozenTrial:
    """Completed trial ``number``, or the chosen trial; a clear error otherwise."""
    if number is None:
        chosen = chosen_trial(record)
        if chosen is None:
            raise AutopruneError(
                f"study {record.name!r} has no feasible trial; choose one by its number (--trial N on the command line)"
            )
        return chosen
    done = {t.number: t for t in record.completed()}
    if number not in done:
        if not done:
            raise AutopruneError(f"study {record.name!r} has no completed trial")
        raise AutopruneError(
            f"trial {number} is not a completed trial of {record.name!r}; completed: {min(done)}..{max(done)}"
        )
    return done[number]


def comparison(record: StudyRecord, trial: FrozenTrial) -> dict[str, Any] | None:
    """The trial's reduction of the size objective next to the better simple baseline's.

    ``{"measure", "reduction", "baseline": "uniform" | "global", "baseline_reduction",
    "uniform_reduction", "global_reduction", "ratio"}``, or None before the baselines
    are measured.
    """
    references, measure = record.references, record.size_objective
    base = record.baseline.get(measure)
    value = record.value(trial, measure, None)
    if not references or not base or value is None:
        return None
    reductions = {
        k: (base / r[measure] if r.get("rate") is not None and r.get(measure) else 1.0) for k, r in references.items()
    }
    better = max(reductions, key=lambda k: reductions[k])
    reduction = base / value
    return {
        "measure": measure,
        "reduction": reduction,
        "baseline": better,
        "baseline_reduction": reductions[better],
        "ratio": reduction / reductions[better],
        **{f"{k}_reduction": v for k, v in reductions.items()},
    }


def uniform_rate(record: StudyRecord, trial: FrozenTrial) -> float | None:
    """The rate of a plan that uses one rate and one method in every group, else None."""
    if record.scope(trial) == "global":
        return None
    plan = record.plan(trial)
    rates, methods = set(plan.rates.values()), set(plan.methods.values())
    whole = set(plan.rates) == set(record.groups)
    return rates.pop() if len(rates) == 1 and len(methods) == 1 and whole else None


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
