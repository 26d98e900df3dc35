"""Scope ``allocation``: per-group sensitivity coefficients turned into rates by dynamic programming.

SPDY (Frantar and Alistarh, ICML 2022) searches, instead of a rate per layer, a
coefficient per layer that scales the layer's error table; dynamic programming then
picks the rates that meet the target at the least scaled error, so that every plan
the search tries is the best plan for some weighting of the tables, and the search
only has to correct where the tables mislead (drops of several layers seldom add up).

Here the tables are the study's sensitivity curves (:mod:`.sensitivity`: each group
pruned alone, its accuracy drop and what it saves at each measured rate, interpolated
between them), the target is the accuracy budget, and the parameters of a trial are

- ``allocation.level``: an integer ``j`` from -8 to 4, the scaled single-group drops
  allowed to add up to ``2 ** (j / 2)`` budgets (:data:`~autoprune.plan.space.ALLOCATION_LEVELS`:
  from 1/16 of the budget, since drops of several groups pruned together are often
  larger than their sum, to 4 budgets, since they can be smaller), and
- ``g.coefficient``: for each group an integer ``k`` from -4 to 4, its drops scaled by
  ``2 ** (k / 2)`` (:data:`~autoprune.plan.space.COEFFICIENT_RANGE`).

The rates are those that save the most of the size objective (FLOPs, or parameters)
with the scaled drops within that share of the budget (a knapsack over the groups,
solved exactly by :func:`.sensitivity.knapsack`), among the channel counts each group can
take on the grid within its curve. Every group takes the study's first importance,
which the curves were measured with. The study record keeps the resolved rates with
each trial, as it does for global trials.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from ..plan import Plan, PlanSpace, rate_grid
from ..plan.space import ALLOCATION_LEVELS, allocation_share
from .sensitivity import beyond, knapsack

#: The levels of an allocation study's warm-start trials (every coefficient 0): 1/4 to 2 budgets.
WARM_LEVELS = (-4, -2, -1, 0, 1, 2)


def coefficient(k: int) -> float:
    """The factor of a group's drops at coefficient parameter ``k``."""
    return 2.0 ** (k / 2)


class Allocation:
    """The allocation plans of one study: its space, its sensitivity curves and the budget they spend.

    ``rows``: the curves (:func:`.sensitivity.measure_sensitivity`); ``sizes``: the baseline's
    ``{group: (channels, channel groups)}``; ``base_size``: the baseline's ``measure``;
    ``allowance``: the drop a share of 1 spends (the budget the curves were read against).
    """

    def __init__(
        self,
        space: PlanSpace,
        rows: list[dict[str, Any]],
        sizes: Mapping[str, tuple[int, int]],
        base_size: float,
        measure: str,
        allowance: float,
    ) -> None:
        self.space, self.allowance, self.sizes = space, allowance, sizes
        self.curves = {g: _curve(rows, g, base_size, measure, allowance) for g in space.groups}
        self.options = {g: _options(space, g, self.curves[g], sizes) for g in space.groups}

    def rates(self, share: float, coefficients: Mapping[str, int]) -> dict[str, float]:
        """Each group's rate: the most saved with the scaled drops within ``share`` budgets."""
        scaled = {
            g: [(rate, coefficient(coefficients.get(g, 0)) * drop, gain) for rate, drop, gain in choices]
            for g, choices in self.options.items()
        }
        return knapsack(scaled, share * self.allowance)

    def plan(self, share: float, coefficients: Mapping[str, int]) -> Plan:
        rates = self.rates(share, coefficients)
        return self.space.plan(rates, dict.fromkeys(rates, self.space.default_method))

    def saving(self, plan: Plan) -> float:
        """What ``plan`` saves of the size measure by the curves (each group's at the share it removes)."""
        removed = plan.removed_fractions({g: self.sizes[g] for g in plan.rates if g in self.curves})
        return sum(_interpolate(self.curves[g], share)[1] for g, share in removed.items())

    def level_saving(self, plan: Plan) -> int:
        """The lowest level whose allocation, every coefficient 0, saves at least what ``plan`` saves by the
        curves (the highest when none does): where a baseline stands among the parameters."""
        low, high = ALLOCATION_LEVELS
        target = self.saving(plan)
        for level in range(low, high + 1):
            if self.saving(self.plan(allocation_share(level), {})) >= target - 1e-9:
                return level
        return high


def _curve(
    rows: list[dict[str, Any]], group: str, base_size: float, measure: str, allowance: float
) -> list[tuple[float, float, float]]:
    """``(rate, drop, saving)`` of ``group``'s curve from rate 0 up to its first point past the curve's
    limit (or its last before a rate that could not be pruned). Drops are made non-decreasing (each the
    largest measured at its rate or below), as an error table is: a lower drop at a higher rate is noise of
    the validation split, and would make pruning further look free."""
    curve = [(0.0, 0.0, 0.0)]
    for row in sorted((r for r in rows if r["group"] == group), key=lambda r: r["rate"]):
        if "failed" in row:
            break
        curve.append((row["rate"], max(curve[-1][1], row["accuracy_drop"]), base_size - row[measure]))
        if beyond(row, allowance):
            break
    return curve


def _options(
    space: PlanSpace, group: str, curve: list[tuple[float, float, float]], sizes: Mapping[str, tuple[int, int]]
) -> list[tuple[float, float, float]]:
    """``(rate, drop, saving)`` for each channel count ``group``'s grid reaches within its curve (and its
    range), at the lowest rate giving it, drop and saving interpolated on the curve at the share removed."""
    settings = space.settings
    limit = min(curve[-1][0], space.limits[group])
    choices: dict[float, tuple[float, float, float]] = {}
    for rate in rate_grid(settings.rate_min, settings.rate_max, settings.rate_step):
        if rate > limit + 1e-9:
            break
        removed = space.plan({group: rate}).removed_fractions({group: sizes[group]})[group]
        if removed not in choices:
            choices[removed] = (rate, *_interpolate(curve, removed))
    return sorted(choices.values()) or [(0.0, 0.0, 0.0)]


def _interpolate(curve: list[tuple[float, float, float]], rate: float) -> tuple[float, float]:
    """The curve's drop and saving at ``rate``, linear between its points (its last point beyond them)."""
    for (r0, d0, s0), (r1, d1, s1) in itertools.pairwise(curve):
        if rate <= r1 + 1e-12:
            t = 0.0 if r1 <= r0 else (rate - r0) / (r1 - r0)
            return d0 + t * (d1 - d0), s0 + t * (s1 - s0)
    return curve[-1][1], curve[-1][2]
