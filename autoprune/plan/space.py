"""The plans one study can try, and how a plan is written as Optuna trial parameters.

Scope ``local``: each prunable group ``g`` is the parameter ``g.rate``, a step of the
grid ``rate_min, rate_min + rate_step, ... `` up to the group's limit, and, when the
study offers several importances, ``g.method``, a categorical choice among them.

Scope ``global`` (Torch-Pruning's global pruning; Fang et al., "DepGraph", CVPR
2023): the parameters are ``global.rate``, the fraction of all channels removed,
``global.max_rate``, the most any group may lose, and ``global.method``; the
channels of all groups are ranked together by mean-normalized importance, so each
group's rate follows from its scores (a :class:`GlobalRanking` resolves them). The
study record keeps the resolved rates with the trial.

Scope ``both``: the categorical parameter ``scope`` picks one of the two per trial.

Scope ``allocation`` (SPDY: Frantar and Alistarh, ICML 2022): the parameters are
``allocation.level``, the integer ``j`` that lets the groups' scaled single-group drops
add up to ``2 ** (j / 2)`` budgets, and ``g.coefficient`` per group, the integer ``k`` that scales its drops by
``2 ** (k / 2)``; an :class:`Allocator` (:class:`autoprune.searcher.allocation.Allocation`)
resolves them into rates over the study's sensitivity curves, and the study record keeps
the resolved rates with the trial, as for a global one.

Weight granularities add ``g.sparsity`` (a step of ``[0, sparsity_max]``) or ``g.nm``
(on or off) per group; a list of ``steps`` adds the parameter ``steps``.

:class:`PlanSpace` alone turns a trial into a plan (:meth:`~PlanSpace.suggest`), a plan
into parameters (:meth:`~PlanSpace.params`, for enqueued warm starts) and stored
parameters back into the plan (:meth:`~PlanSpace.decode`); the parts of a plan that
are the study's, not the sampler's (``round_to`` and ``round_min``, ``reconstruct``, the N:M pattern,
the weight importance, recovery), come from its settings in one place (:meth:`~PlanSpace.plan`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna

from ..errors import AutopruneError
from ..settings import SearchSettings
from .plan import Plan

#: Parameters of global-scope trials, and the parameter that picks the scope (``scope = "both"``).
GLOBAL_RATE, GLOBAL_MAX_RATE, GLOBAL_METHOD, SCOPE_PARAM = "global.rate", "global.max_rate", "global.method", "scope"
#: The parameter of allocation-scope trials that sets the share of the budget the scaled drops spend (each group
#: also has its coefficient, :func:`coefficient_param`).
ALLOCATION_LEVEL = "allocation.level"
#: ``allocation.level``'s range (shares of the budget from 1/16 to 4) and the largest ``g.coefficient`` magnitude.
ALLOCATION_LEVELS, COEFFICIENT_RANGE = (-8, 4), 4
#: The parameter of the number of pruning steps, when the study searches it (``steps = [1, 2, 4]``).
STEPS_PARAM = "steps"


def rate_param(group: str) -> str:
    return f"{group}.rate"


def allocation_share(level: int) -> float:
    """The budgets an allocation's scaled drops may add up to at ``allocation.level`` = ``level``."""
    return 2.0 ** (level / 2)


def coefficient_param(group: str) -> str:
    return f"{group}.coefficient"


def method_param(group: str) -> str:
    return f"{group}.method"


def sparsity_param(group: str) -> str:
    return f"{group}.sparsity"


def nm_param(group: str) -> str:
    return f"{group}.nm"


def rate_grid(rate_min: float, rate_max: float, step: float) -> list[float]:
    """The rates a group can take: ``rate_min`` up to ``rate_max`` in steps of ``step``."""
    n = math.floor((rate_max - rate_min) / step + 1e-9)
    return [round(rate_min + k * step, 10) for k in range(n + 1)]


def grid_floor(value: float, grid: list[float]) -> float:
    """The largest rate of ``grid`` at most ``value`` (the grid's first when all are above it)."""
    return max([r for r in grid if r <= value + 1e-9], default=grid[0])


class GlobalRanking(Protocol):
    """What resolves a global rate into per-group rates (:class:`autoprune.searcher.references.GlobalRanking`)."""

    def plan(self, rate: float, method: str, rate_cap: float | dict[str, float]) -> Plan: ...


class Allocator(Protocol):
    """What resolves an allocation's share and coefficients into per-group rates
    (:class:`autoprune.searcher.allocation.Allocation`)."""

    def plan(self, share: float, coefficients: Mapping[str, int]) -> Plan: ...


@dataclass(frozen=True)
class PlanSpace:
    """The plans of one study: its settings, its searched groups and each group's largest rate
    (``limits``; ``rate_max`` for every group when not given)."""

    settings: SearchSettings
    groups: tuple[str, ...]
    limits: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        limits = dict(self.limits)
        rate_max = self.settings.rate_max  # no group is searched beyond the study's rate_max
        object.__setattr__(self, "limits", {g: min(float(limits.get(g, rate_max)), rate_max) for g in self.groups})

    def with_limits(self, limits: Mapping[str, float]) -> PlanSpace:
        return PlanSpace(self.settings, self.groups, limits)

    @property
    def grid(self) -> list[float]:
        settings = self.settings
        return rate_grid(settings.rate_min, settings.rate_max, settings.rate_step)

    @property
    def default_steps(self) -> int:
        """The steps of a plan the sampler did not choose (a baseline's): the setting, or its list's first."""
        steps = self.settings.steps
        return steps[0] if isinstance(steps, tuple) else steps

    @property
    def default_method(self) -> str:
        return self.settings.importances[0]

    # -- plans ----------------------------------------------------------------------------

    def plan(self, rates: Mapping[str, float], methods: Mapping[str, str] | None = None, **parts: Any) -> Plan:
        """A plan of this study: ``rates`` and ``methods`` (``methods`` omitted: the first importance
        for every rated group), ``parts`` (any other :class:`Plan` field), and the study's own parts."""
        settings = self.settings
        study_parts = {
            "steps": self.default_steps,
            "recovery_steps": settings.recovery_steps,
            "round_to": settings.channel_rounding[0],
            "round_min": settings.channel_rounding[1],
            "reconstruct": settings.reconstruct,
            "nm_pattern": tuple(settings.nm),
            "weight_importance": settings.weight_importance,
        }
        if methods is None:
            methods = dict.fromkeys(rates, self.default_method)
        return Plan(rates=rates, methods=methods, **{**study_parts, **parts})

    def uniform(self, rate: float, method: str | None = None) -> Plan:
        """One rate and one importance (the study's first) in every searched group."""
        return self.plan(dict.fromkeys(self.groups, rate), dict.fromkeys(self.groups, method or self.default_method))

    def global_start(self, rate: float) -> Plan:
        """The global plan at ``rate`` with the widest cap, before a ranking resolves its groups' rates."""
        return self.plan({}, {}, global_rate=rate, global_max_rate=self.settings.rate_max)

    # -- from a trial ---------------------------------------------------------------------

    def suggest(
        self,
        trial: optuna.Trial,
        ranking: GlobalRanking | None = None,
        given: Mapping[str, Any] | None = None,
        allocation: Allocator | None = None,
    ) -> Plan:
        """Ask the sampler for a plan.

        Local: a rate (up to the group's limit, on the grid) and a method per group.
        Global: a global rate and cap, resolved into per-group rates by ``ranking``.
        Allocation: a level and a coefficient per group, resolved into rates by ``allocation``.
        ``given``: ``{"rates", "methods"}`` recorded with an enqueued trial (a baseline's, off
        the grid), which the plan takes instead of what its parameters say.
        The order of the questions is part of a study's reproducibility: it is kept.
        """
        settings = self.settings
        scope = settings.scope
        if scope == "both":
            scope = trial.suggest_categorical(SCOPE_PARAM, ("local", "global"))
        steps = (
            trial.suggest_categorical(STEPS_PARAM, settings.steps)
            if isinstance(settings.steps, tuple)
            else settings.steps
        )
        if "channel" not in settings.granularities:
            channels: dict[str, Any] = {
                "rates": dict.fromkeys(self.groups, 0.0),
                "methods": dict.fromkeys(self.groups, self.default_method),
            }
        elif scope == "global":
            channels = self._suggest_global(trial, None if given is not None else ranking)
        elif scope == "allocation":
            channels = self._suggest_allocation(trial, None if given is not None else allocation)
        else:
            channels = self._suggest_local(trial)
        if given is not None and "channel" in settings.granularities:
            channels.update(rates=dict(given["rates"]), methods=dict(given["methods"]))
        return self.plan(**channels, **self._suggest_weights(trial), steps=int(steps))

    def _suggest_local(self, trial: optuna.Trial) -> dict[str, Any]:
        settings = self.settings
        rates = {
            g: trial.suggest_float(rate_param(g), settings.rate_min, self.limits[g], step=settings.rate_step)
            for g in self.groups
        }
        if len(settings.importances) > 1:
            methods = {g: trial.suggest_categorical(method_param(g), settings.importances) for g in self.groups}
        else:
            methods = dict.fromkeys(self.groups, self.default_method)
        return {"rates": rates, "methods": methods}

    def _suggest_global(self, trial: optuna.Trial, ranking: GlobalRanking | None) -> dict[str, Any]:
        """The global rate, cap and method, resolved by ``ranking`` (None: left to the caller)."""
        settings = self.settings
        rate = trial.suggest_float(GLOBAL_RATE, settings.rate_min, settings.rate_max, step=settings.rate_step)
        cap = trial.suggest_float(GLOBAL_MAX_RATE, self._cap_min(), settings.rate_max, step=settings.rate_step)
        method = (
            trial.suggest_categorical(GLOBAL_METHOD, settings.importances)
            if len(settings.importances) > 1
            else self.default_method
        )
        chosen = {"global_rate": rate, "global_max_rate": cap}
        if ranking is None:
            return {"rates": {}, "methods": {}, **chosen}
        resolved = ranking.plan(rate, method, {g: min(cap, limit) for g, limit in self.limits.items()})
        return {"rates": resolved.rates, "methods": resolved.methods, **chosen}

    def _suggest_allocation(self, trial: optuna.Trial, allocation: Allocator | None) -> dict[str, Any]:
        """The level and the coefficients, resolved by ``allocation`` (None: left to the caller)."""
        level = trial.suggest_int(ALLOCATION_LEVEL, *ALLOCATION_LEVELS)
        k = COEFFICIENT_RANGE
        coefficients = {g: trial.suggest_int(coefficient_param(g), -k, k) for g in self.groups}
        if allocation is None:
            return {"rates": {}, "methods": {}}
        resolved = allocation.plan(allocation_share(level), coefficients)
        return {"rates": resolved.rates, "methods": resolved.methods}

    def allocation_params(self, level: int, coefficients: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The trial parameters of an allocation (coefficients omitted: 0, the curves as measured)."""
        coefficients = coefficients or {}
        level = min(max(int(level), ALLOCATION_LEVELS[0]), ALLOCATION_LEVELS[1])
        return {ALLOCATION_LEVEL: level, **{coefficient_param(g): int(coefficients.get(g, 0)) for g in self.groups}}

    def _suggest_weights(self, trial: optuna.Trial) -> dict[str, Any]:
        """The weight-level part of a plan: a sparsity per group, or which groups take the N:M pattern."""
        settings, part = self.settings, {}
        if "weight" in settings.granularities:
            part["sparsity"] = {
                g: trial.suggest_float(sparsity_param(g), 0.0, settings.sparsity_max, step=settings.rate_step)
                for g in self.groups
            }
        if "nm" in settings.granularities:
            part["nm_groups"] = tuple(g for g in self.groups if trial.suggest_categorical(nm_param(g), (False, True)))
        return part

    def _cap_min(self) -> float:
        """The smallest cap a global trial may take: the grid's second rate (a cap of 0 would prune nothing)."""
        grid = self.grid
        return grid[1] if len(grid) > 1 else grid[0]

    # -- to and from trial parameters -----------------------------------------------------

    def params(self, plan: Plan) -> dict[str, Any]:
        """The trial parameters of ``plan``, as :meth:`suggest` would ask for them: each rate rounded
        down to the grid and kept within its group's limit; sparsities rounded down to theirs."""
        settings, grid = self.settings, self.grid
        params: dict[str, Any] = {}
        if plan.scope == "global":
            params[GLOBAL_RATE] = grid_floor(plan.global_rate, grid)
            params[GLOBAL_MAX_RATE] = grid_floor(max(plan.global_max_rate, self._cap_min()), grid)
            if len(settings.importances) > 1:
                params[GLOBAL_METHOD] = next(iter(plan.methods.values()), self.default_method)
            if settings.scope == "both":
                params[SCOPE_PARAM] = "global"
        elif settings.scope == "allocation":
            raise AutopruneError("a plan of allocation scope is written as parameters by allocation_params, not params")
        else:
            if settings.scope == "both":
                params[SCOPE_PARAM] = "local"
            if "channel" in settings.granularities:
                for g, limit in self.limits.items():
                    params[rate_param(g)] = grid_floor(min(plan.rates.get(g, 0.0), limit), grid)
                    if len(settings.importances) > 1:
                        params[method_param(g)] = plan.methods.get(g, self.default_method)
        if "weight" in settings.granularities:
            sparsity_grid = rate_grid(0.0, settings.sparsity_max, settings.rate_step)
            for g in self.groups:
                params[sparsity_param(g)] = grid_floor(plan.sparsity.get(g, 0.0), sparsity_grid)
        if "nm" in settings.granularities:
            params.update({nm_param(g): g in plan.nm_groups for g in self.groups})
        if isinstance(settings.steps, tuple):
            params[STEPS_PARAM] = plan.steps
        return params

    def decode(self, params: Mapping[str, Any], resolved: Mapping[str, Any] | None = None) -> Plan:
        """The plan of a trial from its parameters. Its per-group rates and methods come from
        ``resolved`` (``{"rates", "methods"}``, kept by the study record) where the parameters do not
        say them exactly: a global trial's resolved plan, a baseline's rates off the grid."""
        parts: dict[str, Any] = {}
        if (GLOBAL_RATE in params or ALLOCATION_LEVEL in params) and resolved is None:
            scope = "global" if GLOBAL_RATE in params else "allocation"
            raise AutopruneError(f"a trial of {scope} scope needs its resolved per-group plan")
        if GLOBAL_RATE in params:
            parts.update(global_rate=float(params[GLOBAL_RATE]), global_max_rate=float(params[GLOBAL_MAX_RATE]))
        if resolved is not None:
            rates, methods = dict(resolved["rates"]), dict(resolved["methods"])
        else:
            rates = {g: float(params.get(rate_param(g), 0.0)) for g in self.groups}
            methods = {g: params.get(method_param(g), self.default_method) for g in self.groups}
        sparsity = {g: float(params.get(sparsity_param(g), 0.0)) for g in self.groups}
        nm_groups = tuple(g for g in self.groups if params.get(nm_param(g)))
        steps = params.get(STEPS_PARAM, self.default_steps)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            steps = 1
        return self.plan(rates, methods, sparsity=sparsity, nm_groups=nm_groups, steps=steps, **parts)
