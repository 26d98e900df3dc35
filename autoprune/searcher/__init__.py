"""The search engine: the space of per-group plans, how a plan is scored, and the Optuna loop.

(Named ``searcher`` so that ``autoprune.search`` stays the function.)
"""

from .evaluation import Budget, Evaluator, apply_plan, calibration_batches, validation_batches
from .optimize import (
    SearchResult,
    baseline_source,
    check_importances,
    ensure_sensitivity,
    open_search,
    preflight,
    prepare,
    search,
)
from .recovery import recalibrate_batchnorm
from .references import find_references, global_plan, largest_feasible, uniform_plan
from .samplers import SAMPLERS, make_sampler
from .sensitivity import measure_sensitivity, rate_limits, warm_start_plans
from .space import plan_params, rate_grid, suggest_plan

__all__ = [
    "SAMPLERS",
    "Budget",
    "Evaluator",
    "SearchResult",
    "apply_plan",
    "baseline_source",
    "calibration_batches",
    "check_importances",
    "ensure_sensitivity",
    "find_references",
    "global_plan",
    "largest_feasible",
    "make_sampler",
    "measure_sensitivity",
    "open_search",
    "plan_params",
    "preflight",
    "prepare",
    "rate_grid",
    "rate_limits",
    "recalibrate_batchnorm",
    "search",
    "suggest_plan",
    "uniform_plan",
    "validation_batches",
    "warm_start_plans",
]
