"""Local refinement: the last trials of a search move the best feasible plan one step at a time.

A model-based sampler over 20 to 40 rates learns slowly, and its best plan often
comes early and stays (docs/benchmarks.md). Late in a search the study knows one
good feasible plan; its neighbours are the likeliest improvements: one group
pruned a step further, or one a step further while another is given a step back
(a trade between groups, the move of NetAdapt's greedy search: Yang et al., ECCV
2018; and of the local search SPDY runs over its coefficients: Frantar and
Alistarh, ICML 2022). With ``search.refine = s``, the last ``s`` of the study's
trials are such moves of the chosen trial (the feasible one with the best
objective; :func:`origin`) as it is when each starts, so that a move that succeeds becomes the
next one's origin: a stochastic hill climb under the accuracy budget.

A move changes the parameters that set how much is pruned (``g.rate``, ``global.rate``
and ``global.max_rate``, ``allocation.level``, and ``g.coefficient`` the other way),
each by as many steps as it takes to change the model (with ``round_to``, a step of
the grid often keeps the same channels), and is drawn among the moves no trial holds,
structures compared (two plans that keep the same channels are the same model). It
must add to the size objective's saving by the study's sensitivity curves when it has
them (each group's saving interpolated between its measured rates), else move more
parameters towards pruning than away. An infeasible move costs little: early stopping
ends its validation as soon as it is out of the
budget. Each move records the trial it moved as the system attribute ``refined_from``.
:class:`LocalRefinement` wraps the study's sampler, which keeps sampling
every other trial; refinement needs one objective, so a multi-objective study is
never refined.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ..plan import ALLOCATION_LEVEL, GLOBAL_MAX_RATE
from ..results.record import StudyRecord
from ..settings import SearchSettings
from .duplicates import PlanKeys

#: Moves drawn before a refinement trial gives up and leaves the trial to the study's sampler.
ATTEMPTS = 200
#: The system attribute of a refinement trial: the number of the trial whose parameters it moved.
REFINED_FROM = "refined_from"
#: The chance that a move gives a step back in another group (a trade) rather than only pruning further.
TRADE_CHANCE = 0.5


class LocalRefinement(optuna.samplers.BaseSampler):
    """``base`` for the first trials; for those starting once ``trials * (1 - refine)`` are complete or
    running, a move of the chosen trial's plan (drawn from the study's seed and the trial's number).
    ``keys``: the study's plans' structure keys (and the baseline's group sizes, which turn rates into
    channel counts)."""

    def __init__(self, base: optuna.samplers.BaseSampler, keys: PlanKeys, settings: SearchSettings) -> None:
        self.base, self.keys = base, keys
        self.share, self.trials, self.seed = settings.refine, settings.trials, settings.seed
        self._moves: dict[int, dict[str, Any]] = {}

    # -- the sampler API: a move where one is due, the base sampler otherwise --------------

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        found = self._move(study, trial)
        if found is None:
            return self.base.infer_relative_search_space(study, trial)
        self._moves[trial.number] = found
        return dict(found["distributions"])

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        found = self._moves.pop(trial.number, None)
        if found is None:
            return self.base.sample_relative(study, trial, search_space)
        study._storage.set_trial_system_attr(trial._trial_id, REFINED_FROM, found["origin"])  # as NSGA-II's
        return dict(found["params"])

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    # -- the moves ------------------------------------------------------------------------

    def refines(self, study: optuna.Study, number: int) -> bool:
        """Whether trial ``number`` is one of the study's last ``refine`` share (single-objective studies)."""
        if self.share <= 0 or len(study.directions) > 1:
            return False
        started = sum(
            1
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
            if t.number != number
        )
        return started >= math.ceil(self.trials * (1 - self.share) - 1e-9)

    def _move(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any] | None:
        """The move this trial runs, or None when it is not a refinement trial (or no move is left)."""
        if not self.refines(study, trial.number):
            return None
        record = StudyRecord(study)
        structure = Structures(record, self.keys)
        incumbent = origin(record, structure)
        if incumbent is None:
            return None
        taken = {self.keys.of_trial(t) for t in study.get_trials(deepcopy=False) if t.number != trial.number}
        rng = random.Random(f"{self.seed}:{trial.number}:refine")
        params = move(incumbent.params, incumbent.distributions, taken, rng, structure)
        if params is None:
            return None
        return {"params": params, "distributions": incumbent.distributions, "origin": incumbent.number}


def origin(record: StudyRecord, structure: Structures) -> FrozenTrial | None:
    """The trial a move starts from: the chosen trial (the feasible one with the best objective), unless its
    parameters stand for another plan than it pruned (a baseline of the allocation scope, its exact plan
    only approached by a level), then the best feasible trial whose parameters say its plan."""
    chosen = record.chosen_trial()
    if chosen is None or _said_by_its_params(record, structure, chosen):
        return chosen
    return record.best_of([t for t in record.feasible() if _said_by_its_params(record, structure, t)])


def _said_by_its_params(record: StudyRecord, structure: Structures, trial: FrozenTrial) -> bool:
    if not trial.params:
        return False
    if ALLOCATION_LEVEL not in trial.params or record.given_plan(trial) is None:
        return True  # local and global parameters say the plan, or its grid floor
    return structure.keys.of_params(trial.params) == structure.keys.of_trial(trial)


class Structures:
    """How a move changes a plan: the model it prunes (``keys.of_params``, parameters resolved as the
    study's trials resolve them), and what it saves by the study's sensitivity curves."""

    def __init__(self, record: StudyRecord, keys: PlanKeys) -> None:
        self.keys, self.sizes = keys, keys.sizes
        self.saving = SavingEstimate.from_record(record)

    def key(self, params: Mapping[str, Any]) -> tuple:
        return self.keys.of_params(params)

    def saves(self, params: Mapping[str, Any]) -> float | None:
        """What the plan of ``params`` saves of the size measure by the curves (None without curves)."""
        plan = self.keys.plan_of(params)
        if self.saving is None or plan is None:
            return None
        return self.saving.total(plan.removed_fractions(self.sizes))


def pruning_direction(name: str, distribution: BaseDistribution) -> int:
    """+1 where raising parameter ``name`` prunes more (``g.rate``, ``global.rate``, ``global.max_rate``,
    ``allocation.level``), -1 where lowering it does (``g.coefficient``: a group made cheaper), 0 for the
    parameters a move leaves alone (importances, steps, weight sparsities)."""
    if not isinstance(distribution, (FloatDistribution, IntDistribution)) or distribution.step is None:
        return 0
    if name.endswith(".rate") or name in (GLOBAL_MAX_RATE, ALLOCATION_LEVEL):
        return 1
    return -1 if name.endswith(".coefficient") else 0


def move(
    params: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    taken: set[tuple],
    rng: random.Random,
    structure: Structures,
    attempts: int = ATTEMPTS,
) -> dict[str, Any] | None:
    """Parameters near ``params`` whose model no key of ``taken`` holds and that save more: one parameter
    moved towards more pruning until the model changes (a group's next channel count), maybe another moved
    back to its previous model; more as attempts fail. None when no such move is found (the study's sampler
    then draws)."""
    directions = {n: d for n in params if (d := pruning_direction(n, distributions[n]))}
    up = {n: v for n, d in directions.items() if (v := _next(params, n, distributions[n], d, structure)) is not None}
    down = {n: v for n, d in directions.items() if (v := _next(params, n, distributions[n], -d, structure)) is not None}
    before = structure.saves(params)
    for attempt in range(attempts if up else 0):
        moved = dict(params)
        raised = rng.sample(sorted(up), min(len(up), 1 + attempt // 50))
        moved.update({n: up[n] for n in raised})
        lowered = sorted(set(down) - set(raised))
        if lowered and rng.random() < TRADE_CHANCE:
            name = rng.choice(lowered)
            moved[name] = down[name]
        if structure.key(moved) in taken:
            continue
        after = structure.saves(moved)
        if (after > before + 1e-12) if after is not None and before is not None else _net_up(moved, params, directions):
            return moved
    return None


def _net_up(moved: Mapping[str, Any], params: Mapping[str, Any], directions: Mapping[str, int]) -> bool:
    """More parameters moved towards pruning than away from it."""
    return sum(directions[n] * (1 if moved[n] > params[n] else -1) for n in directions if moved[n] != params[n]) > 0


def _next(
    params: Mapping[str, Any],
    name: str,
    distribution: FloatDistribution | IntDistribution,
    direction: int,
    structure: Structures,
) -> float | int | None:
    """Parameter ``name`` moved by steps in ``direction`` until the model changes (a group's channel count,
    say), as Optuna stores it; None past its range."""
    low, step, value = distribution.low, distribution.step, params[name]
    now = structure.key(params)
    index = round((value - low) / step)
    while True:
        index += direction
        moved = round(low + index * step, 10)
        if isinstance(distribution, IntDistribution):
            moved = int(moved)
        if not low - 1e-9 <= moved <= distribution.high + 1e-9:
            return None
        if structure.key({**params, name: moved}) != now:
            return moved


class SavingEstimate:
    """The size measure a plan saves, summed over groups, each interpolated on its sensitivity curve
    (the measure saved when that group alone loses that share of its channels; 0 at none)."""

    def __init__(self, curves: Mapping[str, list[tuple[float, float]]]) -> None:
        self.curves = {g: sorted([(0.0, 0.0), *points]) for g, points in curves.items()}

    @classmethod
    def from_record(cls, record: StudyRecord) -> SavingEstimate | None:
        rows = record.sensitivity
        measure, base = record.size_objective_measure, record.baseline
        if not rows or measure not in base:
            return None
        curves: dict[str, list[tuple[float, float]]] = {}
        for row in rows:
            if measure in row:
                curves.setdefault(row["group"], []).append((row["rate"], base[measure] - row[measure]))
        return cls(curves) if curves else None

    def total(self, fractions: Mapping[str, float]) -> float:
        """The saving of a plan removing ``fractions`` of each group's channels."""
        return sum(self.at(group, share) for group, share in fractions.items() if group in self.curves)

    def at(self, group: str, share: float) -> float:
        points = self.curves[group]
        for (r0, s0), (r1, s1) in itertools.pairwise(points):
            if share <= r1 + 1e-12:
                return s0 if r1 <= r0 else s0 + (s1 - s0) * (share - r0) / (r1 - r0)
        if len(points) < 2:
            return points[-1][1]
        (r0, s0), (r1, s1) = points[-2:]
        return s1 if r1 <= r0 else s1 + (s1 - s0) * (share - r1) / (r1 - r0)  # past the curve: its last slope
