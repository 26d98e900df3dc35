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


def suggest_plan(trial: optuna.Trial, groups: list[str], settings: SearchSettings) -> Plan:
    """Ask the sampler for a rate (and a method) per group."""
    rates = {g: trial.suggest_float(rate_param(g), settings.rate_min, settings.rate_max, step=settings.rate_step)
             for g in groups}
    if len(settings.importances) > 1:
        methods = {g: trial.suggest_categorical(method_param(g), settings.importances) for g in groups}
    else:
        methods = {g: settings.importances[0] for g in groups}
    return {"rates": rates, "methods": methods}


def uniform_params(rate: float, groups: list[str], settings: SearchSettings) -> dict[str, Any]:
    """The parameters of a uniform plan (``rate``, snapped to the grid, in every group, the first importance)."""
    grid = rate_grid(settings.rate_min, settings.rate_max, settings.rate_step)
    on_grid = min(grid, key=lambda r: abs(r - rate))
    params: dict[str, Any] = {rate_param(g): on_grid for g in groups}
    if len(settings.importances) > 1:
        params.update({method_param(g): settings.importances[0] for g in groups})
    return params
