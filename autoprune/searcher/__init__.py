"""The search engine: the space of per-group plans, how a plan is scored, and the Optuna loop.

(Named ``searcher`` so that ``autoprune.search`` stays the function.)
"""

from .evaluation import Evaluator, apply_plan, calibration_batches
from .optimize import SearchResult, baseline_source, check_importances, preflight, search
from .recovery import recalibrate_batchnorm
from .space import rate_grid, suggest_plan, uniform_params

__all__ = [
    "Evaluator",
    "SearchResult",
    "apply_plan",
    "baseline_source",
    "check_importances",
    "preflight",
    "calibration_batches",
    "rate_grid",
    "recalibrate_batchnorm",
    "search",
    "suggest_plan",
    "uniform_params",
]
