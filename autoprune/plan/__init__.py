"""The plan: one frozen object for what a trial prunes, the space the sampler draws it from, and how it is applied.

``Plan`` (:mod:`.plan`) is the value; ``PlanSpace`` (:mod:`.space`) suggests plans from
an Optuna trial, writes them as trial parameters and reads them back; ``Plan.apply``
(:mod:`.apply`) prunes a copy of a model with one. The search, its baselines, the
sensitivity curves, the latency table, the rebuild and the export all go through them.
"""

from .apply import BaselineStructure, apply_plan, pruned_copy
from .plan import Plan
from .space import (
    ALLOCATION_LEVEL,
    GLOBAL_MAX_RATE,
    GLOBAL_METHOD,
    GLOBAL_RATE,
    SCOPE_PARAM,
    STEPS_PARAM,
    PlanSpace,
    coefficient_param,
    method_param,
    nm_param,
    rate_grid,
    rate_param,
    sparsity_param,
)

__all__ = [
    "ALLOCATION_LEVEL",
    "GLOBAL_MAX_RATE",
    "GLOBAL_METHOD",
    "GLOBAL_RATE",
    "SCOPE_PARAM",
    "STEPS_PARAM",
    "BaselineStructure",
    "Plan",
    "PlanSpace",
    "apply_plan",
    "coefficient_param",
    "method_param",
    "nm_param",
    "pruned_copy",
    "rate_grid",
    "rate_param",
    "sparsity_param",
]
