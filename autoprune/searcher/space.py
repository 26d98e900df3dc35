"""The search space: a rate (and an importance, when several are offered) per channel group.

Scope ``local``: each prunable group ``g`` is the Optuna parameter ``g.rate``, a
step of the grid ``rate_min, rate_min + rate_step, ... rate_max``, and, when the
study offers several importances, ``g.method``, a categorical choice among them.

Scope ``global`` (Torch-Pruning's global pruning; Fang et al., "DepGraph", CVPR
2023): the parameters are ``global.rate``, the fraction of all channels removed,
``global.max_rate``, the most any group may lose, and ``global.method``; the
channels of all groups are ranked together by mean-normalized importance, so each
group's rate follows from its scores. The resolved per-group plan is recorded as
the trial's user attribute ``plan``.

Scope ``both``: the categorical parameter ``scope`` picks one of the two per trial.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from ..results.record import (
    GLOBAL_MAX_RATE,
    GLOBAL_METHOD,
    GLOBAL_RATE,
    PLAN_ATTR,
    SCOPE_PARAM,
    STEPS_PARAM,
    Plan,
    method_param,
    nm_param,
    rate_param,
    sparsity_param,
)
from ..settings import SearchSettings


def rate_grid(rate_min: float, rate_max: float, step: float) -> list[float]:
    """The rates a group can take: ``rate_min`` up to ``rate_max`` in steps of ``step``."""
    n = math.floor((rate_max - rate_min) / step + 1e-9)
    return [round(rate_min + k * step, 10) for k in range(n + 1)]


def suggest_plan(trial: optuna.Trial, limits: dict[str, float], settings: SearchSettings, ranking: Any = None) -> Plan:
    """Ask the sampler for a plan in the study's scope.

    Local: a rate (up to the group's limit, on the grid) and a method per group.
    Global: a global rate and cap, resolved into per-group rates by ``ranking``
    (a :class:`~autoprune.searcher.references.GlobalRanking`).
    """
    scope = settings.scope
    if scope == "both":
        scope = trial.suggest_categorical(SCOPE_PARAM, ("local", "global"))
    steps = (
        trial.suggest_categorical(STEPS_PARAM, settings.steps) if isinstance(settings.steps, tuple) else settings.steps
    )
    if "channel" not in settings.granularities:
        plan = {"rates": dict.fromkeys(limits, 0.0), "methods": dict.fromkeys(limits, settings.importances[0])}
    elif scope == "global":
        plan = _suggest_global(trial, limits, settings, ranking)
    else:
        plan = _suggest_local(trial, limits, settings)
    plan.update(_suggest_weights(trial, limits, settings))
    return with_schedule(plan, steps, settings.recovery_steps)


def _suggest_weights(trial: optuna.Trial, limits: dict[str, float], settings: SearchSettings) -> dict[str, Any]:
    """The weight-level part of a plan: a sparsity per group, or which groups take the N:M pattern."""
    part: dict[str, Any] = {}
    if "weight" in settings.granularities:
        sparsity = {
            g: trial.suggest_float(sparsity_param(g), 0.0, settings.sparsity_max, step=settings.rate_step)
            for g in limits
        }
        if any(sparsity.values()):
            part["sparsity"] = {g: s for g, s in sparsity.items() if s > 0}
    if "nm" in settings.granularities:
        groups = [g for g in limits if trial.suggest_categorical(nm_param(g), (False, True))]
        if groups:
            part["nm"] = {"groups": groups, "pattern": list(settings.nm)}
    if part:
        part["weight_importance"] = settings.weight_importance
    return part


def with_schedule(plan: Plan, steps: int, recovery_steps: int) -> Plan:
    """``plan`` with its pruning schedule: ``steps`` (and ``recovery_steps``) recorded when above 1 (0)."""
    plan = dict(plan)
    if steps > 1:
        plan["steps"] = int(steps)
        if recovery_steps:
            plan["recovery_steps"] = int(recovery_steps)
    return plan


def _suggest_local(trial: optuna.Trial, limits: dict[str, float], settings: SearchSettings) -> Plan:
    groups = list(limits)
    rates = {
        g: trial.suggest_float(rate_param(g), settings.rate_min, limits[g], step=settings.rate_step) for g in groups
    }
    if len(settings.importances) > 1:
        methods = {g: trial.suggest_categorical(method_param(g), settings.importances) for g in groups}
    else:
        methods = dict.fromkeys(groups, settings.importances[0])
    return {"rates": rates, "methods": methods}


def _suggest_global(trial: optuna.Trial, limits: dict[str, float], settings: SearchSettings, ranking: Any) -> Plan:
    rate = trial.suggest_float(GLOBAL_RATE, settings.rate_min, settings.rate_max, step=settings.rate_step)
    cap = trial.suggest_float(GLOBAL_MAX_RATE, _cap_min(settings), settings.rate_max, step=settings.rate_step)
    method = (
        trial.suggest_categorical(GLOBAL_METHOD, settings.importances)
        if len(settings.importances) > 1
        else settings.importances[0]
    )
    plan = ranking.plan(rate, method, {g: min(cap, limit) for g, limit in limits.items()})
    trial.set_user_attr(PLAN_ATTR, plan)
    return plan


def _cap_min(settings: SearchSettings) -> float:
    """The smallest cap a global trial may take: the grid's second rate (a cap of 0 would prune nothing)."""
    grid = rate_grid(settings.rate_min, settings.rate_max, settings.rate_step)
    return grid[1] if len(grid) > 1 else grid[0]


def _grid_floor(value: float, grid: list[float]) -> float:
    """The largest rate of ``grid`` at most ``value`` (the grid's first when all are above it)."""
    return max([r for r in grid if r <= value + 1e-9], default=grid[0])


def global_params(rate: float, settings: SearchSettings) -> dict[str, Any]:
    """The trial parameters of a global plan at ``rate`` (rounded down to the grid), capped at ``rate_max``."""
    grid = rate_grid(settings.rate_min, settings.rate_max, settings.rate_step)
    params: dict[str, Any] = {GLOBAL_RATE: _grid_floor(rate, grid), GLOBAL_MAX_RATE: grid[-1]}
    if len(settings.importances) > 1:
        params[GLOBAL_METHOD] = settings.importances[0]
    if settings.scope == "both":
        params[SCOPE_PARAM] = "global"
    if isinstance(settings.steps, tuple):
        params[STEPS_PARAM] = settings.steps[0]
    return params


def weight_params(plan: Plan, groups: list[str], settings: SearchSettings) -> dict[str, Any]:
    """The weight-level trial parameters of ``plan`` (sparsity rounded down to the grid; N:M on or off)."""
    params: dict[str, Any] = {}
    if "weight" in settings.granularities:
        grid = rate_grid(0.0, settings.sparsity_max, settings.rate_step)
        for g in groups:
            params[sparsity_param(g)] = _grid_floor(plan.get("sparsity", {}).get(g, 0.0), grid)
    if "nm" in settings.granularities:
        chosen = set(plan.get("nm", {}).get("groups", ()))
        params.update({nm_param(g): g in chosen for g in groups})
    return params


def plan_params(plan: Plan, limits: dict[str, float], settings: SearchSettings) -> dict[str, Any]:
    """The trial parameters of ``plan``: each rate rounded down to the grid and kept within its group's limit."""
    grid = rate_grid(settings.rate_min, settings.rate_max, settings.rate_step)
    params: dict[str, Any] = {SCOPE_PARAM: "local"} if settings.scope == "both" else {}
    for g, limit in limits.items():
        rate = plan["rates"].get(g, 0.0)
        params[rate_param(g)] = _grid_floor(min(rate, limit), grid)
        if len(settings.importances) > 1:
            params[method_param(g)] = plan["methods"].get(g, settings.importances[0])
    if "channel" not in settings.granularities:
        params = {k: v for k, v in params.items() if not k.endswith((".rate", ".method"))}
    params.update(weight_params(plan, list(limits), settings))
    if isinstance(settings.steps, tuple):
        params[STEPS_PARAM] = plan.get("steps", settings.steps[0])
    return params


def uniform_params(rate: float, limits: dict[str, float], settings: SearchSettings) -> dict[str, Any]:
    """The parameters of a uniform plan (``rate`` in every group, rounded down to the grid, the first importance)."""
    groups = list(limits)
    return plan_params({"rates": dict.fromkeys(groups, rate), "methods": {}}, limits, settings)
