"""Per-group sensitivity: each group pruned alone at each rate, and the plans it suggests.

A group's curve is the accuracy drop when only that group is pruned, scored as a
trial is (BatchNorm recalibration, the same validation images), at every rate of
the search grid at steps of at least ``SENSITIVITY_STEP``; a curve stops once
the drop passes ``LIMIT_FACTOR`` times the budget, since no plan can use more of
that group (NetAdapt, Yang et al., ECCV 2018; AMC, He et al., ECCV 2018).

From the curves the search gets:

- each group's largest useful rate (the range its parameter searches), and
- warm-start plans: the per-group rates that save the most of the objective while
  the single-group drops add up to a share of the budget (a knapsack over the
  curves, solved exactly by dynamic programming), at several shares, since
  drops of several groups seldom add up exactly.

With a fine-tuned budget the curves are read against :data:`~.finetuned.RECOVERY_PRIOR` times
the budget, since fine-tuning recovers much of a recalibrated drop.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import PluginError, PruningError
from ..plan import Plan, PlanSpace, rate_grid
from .evaluation import Budget, Evaluator
from .finetuned import recalibrated_allowance

#: The coarsest step between the rates of a curve.
SENSITIVITY_STEP = 0.2
#: A curve stops once a group alone loses this many times the budget.
LIMIT_FACTOR = 2.0
#: Shares of the budget that the warm-start plans spend by the curves' count.
SHARES = (0.5, 1.0, 1.5, 2.0, 3.0)
#: The knapsack's resolution: the budget in this many units.
UNITS = 100


def curve_rates(rate_min: float, rate_max: float, rate_step: float) -> list[float]:
    """The rates a curve is measured at: the grid, thinned to steps of at least ``SENSITIVITY_STEP``."""
    grid = [r for r in rate_grid(rate_min, rate_max, rate_step) if r > 0]
    every = max(1, math.ceil(SENSITIVITY_STEP / rate_step - 1e-9))
    picked = grid[every - 1 :: every]
    if grid and picked[-1:] != grid[-1:]:
        picked.append(grid[-1])
    return picked


def measure_sensitivity(evaluator: Evaluator) -> list[dict[str, Any]]:
    """One row per (group, rate): ``group``, ``rate``, ``accuracy_drop``, ``flops``, ``params``, ``evaluated``
    (or ``failed``, the error, where the group could not be pruned at that rate)."""
    settings = evaluator.settings
    method = settings.importances[0]
    allowance = LIMIT_FACTOR * recalibrated_allowance(settings)
    budget = Budget(evaluator.budget.base_correct, evaluator.budget.total, allowance)
    rows = []
    for group in evaluator.groups:
        for rate in curve_rates(settings.rate_min, settings.rate_max, settings.rate_step):
            try:
                metrics = evaluator.evaluate(evaluator.space.plan({group: rate}, {group: method}), budget=budget)
            except (PruningError, PluginError) as exc:  # the curve ends where pruning fails
                rows.append({"group": group, "rate": rate, "failed": f"{type(exc).__name__}: {exc}"})
                break
            rows.append(
                {
                    "group": group,
                    "rate": rate,
                    **{k: metrics[k] for k in ("accuracy_drop", "flops", "params", "evaluated")},
                }
            )
            if metrics["accuracy_drop"] > budget.max_drop:
                break
    return rows


def rate_limits(
    rows: list[dict[str, Any]], groups: list[str], rate_min: float, rate_max: float, rate_step: float, max_drop: float
) -> dict[str, float]:
    """Each group's largest grid rate below the first measured rate whose drop passes the curve's limit."""
    grid = rate_grid(rate_min, rate_max, rate_step)
    limits = {}
    for group in groups:
        over = [r["rate"] for r in rows if r["group"] == group and beyond(r, max_drop)]
        if not over:
            limits[group] = grid[-1]
            continue
        below = [r for r in grid if r < min(over) - 1e-9]
        limits[group] = below[-1] if len(below) > 1 else grid[min(1, len(grid) - 1)]
    return limits


def warm_start_plans(
    rows: list[dict[str, Any]], space: PlanSpace, base_size: float, measure: str, max_drop: float
) -> list[Plan]:
    """Plans of ``space`` that spend each share of the budget on the curves where it saves the most ``measure``
    (every group with the study's first importance, which the curves were measured with)."""
    options: dict[str, list[tuple[float, float, float]]] = {g: [(0.0, 0.0, 0.0)] for g in space.groups}
    for row in rows:
        if not beyond(row, max_drop):
            options[row["group"]].append((row["rate"], max(0.0, row["accuracy_drop"]), base_size - row[measure]))
    plans, seen = [], set()
    for share in SHARES:
        rates = knapsack(options, share * max_drop)
        key = tuple(sorted(rates.items()))
        if any(rates.values()) and key not in seen:
            seen.add(key)
            plans.append(space.plan(rates, dict.fromkeys(space.groups, space.default_method)))
    return plans


def beyond(row: dict[str, Any], max_drop: float) -> bool:
    """A curve point no plan should reach: failed, or a drop past the curve's limit."""
    return "failed" in row or row["accuracy_drop"] > LIMIT_FACTOR * max_drop


def knapsack(options: dict[str, list[tuple[float, float, float]]], allowance: float) -> dict[str, float]:
    """One option per group maximizing the total saving with the total drop within ``allowance``."""
    if allowance <= 0:
        return dict.fromkeys(options, 0.0)
    unit = allowance / UNITS
    best: dict[int, tuple[float, dict[str, float]]] = {0: (0.0, {})}
    for group, choices in options.items():
        step: dict[int, tuple[float, dict[str, float]]] = {}
        for used, (saving, rates) in best.items():
            for rate, drop, gain in choices:
                total = used + math.ceil(drop / unit - 1e-9)
                if total > UNITS:
                    continue
                candidate = (saving + gain, {**rates, group: rate})
                if total not in step or candidate[0] > step[total][0]:
                    step[total] = candidate
        best = step
    return max(best.values(), key=lambda item: item[0])[1]
