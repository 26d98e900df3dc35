"""The search space: a rate (and an importance, when several are offered) per channel group.

Each prunable group ``g`` is the Optuna parameter ``g.rate``, a step of the grid
``rate_min, rate_min + rate_step, ... rate_max``, and, when the study offers
several importances, ``g.method``, a categorical choice among them.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from ..results.record import Plan, method_param, rate_param
from ..settings import SearchSettings


def rate_grid(rate_min: float, rate_max: float, step: float) -> list[float]:
    """The rates a group can take: ``rate_min`` up to ``rate_max`` in steps of ``step``."""
    n = int(math.floor((rate_max - rate_min) / step + 1e-9))
    return [round(rate_min + k * step, 10) for k in range(n + 1)]


def suggest_plan(trial: optuna.Trial, limits: dict[str, float], settings: SearchSettings) -> Plan:
    """Ask the sampler for a rate (up to the group's limit, on the grid) and a method per group."""
    groups = list(limits)
    rates = {g: trial.suggest_float(rate_param(g), settings.rate_min, limits[g], step=settings.rate_step)
             for g in groups}
    if len(settings.importances) > 1:
        methods = {g: trial.suggest_categorical(method_param(g), settings.importances) for g in groups}
    else:
        methods = {g: settings.importances[0] for g in groups}
    return {"rates": rates, "methods": methods}


def plan_params(plan: Plan, limits: dict[str, float], settings: SearchSettings) -> dict[str, Any]:
    """The trial parameters of ``plan``: each rate rounded down to the grid and kept within its group's limit."""
    grid = rate_grid(settings.rate_min, settings.rate_max, settings.rate_step)
    params: dict[str, Any] = {}
    for g, limit in limits.items():
        rate = plan["rates"].get(g, 0.0)
        params[rate_param(g)] = max([r for r in grid if r <= min(rate, limit) + 1e-9], default=grid[0])
        if len(settings.importances) > 1:
            params[method_param(g)] = plan["methods"].get(g, settings.importances[0])
    return params


def uniform_params(rate: float, limits: dict[str, float], settings: SearchSettings) -> dict[str, Any]:
    """The parameters of a uniform plan (``rate`` in every group, rounded down to the grid, the first importance)."""
    groups = list(limits)
    return plan_params({"rates": {g: rate for g in groups}, "methods": {}}, limits, settings)
