"""The search engine: the space of per-group plans, how a plan is scored, and the Optuna loop.

(Named ``searcher`` so that ``autoprune.search`` stays the function.)
"""

from .evaluation import Budget, Evaluator, calibration_batches, validation_batches
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
from .references import GlobalRanking, find_references, global_plan, largest_feasible
from .samplers import SAMPLERS, make_sampler
from .sensitivity import measure_sensitivity, rate_limits, warm_start_plans

__all__ = [
    "SAMPLERS",
    "Budget",
    "Evaluator",
    "GlobalRanking",
    "SearchResult",
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
    "preflight",
    "prepare",
    "rate_limits",
    "search",
    "validation_batches",
    "warm_start_plans",
]
