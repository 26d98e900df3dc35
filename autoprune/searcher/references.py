"""The simple baselines every study is measured against: one uniform rate, and global pruning.

- **Uniform**: the same rate in every group, what a user would pick by hand.
- **Global**: one importance threshold over all groups, as Torch-Pruning's global
  pruning does (Fang et al., "DepGraph", CVPR 2023): every group's scores are
  divided by their mean, the channels of all groups are ranked together, and the
  lowest fraction ``rate`` of all channels is removed (no group beyond ``rate_max``).

Each is found by bisection to the largest rate within the accuracy budget, scored
by exactly a trial's evaluation, and stored with the study, so every report and
every search's summary can say how much more the per-group search found.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..engine import group_scores
from ..errors import PluginError, PruningError
from ..plan import Plan
from ..plan.apply import GRADIENT_BATCHES
from .evaluation import Evaluator

#: Bisection steps after the first probe at ``rate_max`` (resolution ``rate_max / 2**steps``).
BISECTION_STEPS = 6
KINDS = ("uniform", "global")


def global_plan(
    rate: float,
    scores: dict[str, torch.Tensor],
    sizes: dict[str, tuple[int, int]],
    method: str,
    rate_cap: float | dict[str, float],
) -> dict[str, dict[str, Any]]:
    """``{"rates", "methods"}`` that remove the lowest-ranked ``rate`` of all channels, ranked by mean-normalized importance.

    No group loses more than its cap (``rate_cap``: one for all, or one per group),
    nor its last channel. A group with channel groups (grouped convolutions,
    attention heads) loses whole units, one channel per channel group, scored by their mean.
    """
    caps = rate_cap if isinstance(rate_cap, dict) else dict.fromkeys(sizes, rate_cap)
    units, total = [], 0
    for name, (channels, cg) in sizes.items():
        size = channels // cg
        per_unit = scores[name].view(cg, size).mean(0) if cg > 1 else scores[name]
        mean = float(per_unit.abs().mean())
        normalized = per_unit / (mean if mean > 0 else 1.0)
        units += [(float(v), name, cg) for v in normalized]
        total += channels
    removed = dict.fromkeys(sizes, 0)
    cap = {n: min(math.floor(caps[n] * (c // cg) + 1e-9), c // cg - 1) for n, (c, cg) in sizes.items()}
    target, taken = rate * total, 0
    for _, name, cg in sorted(units, key=lambda u: u[0]):
        if taken + cg / 2 > target:
            break
        if removed[name] < cap[name]:
            removed[name] += 1
            taken += cg
    rates = {n: removed[n] / (sizes[n][0] // sizes[n][1]) for n in sizes}
    return {"rates": rates, "methods": dict.fromkeys(sizes, method)}


def largest_feasible(
    evaluate: Callable[[float], dict[str, float]], high: float, max_drop: float, steps: int = BISECTION_STEPS
) -> dict[str, Any]:
    """Bisect for the largest rate in [0, ``high``] whose plan stays within ``max_drop``.

    Returns the rate and its metrics (``rate`` None when not even rate 0 fits) and
    the number of evaluations. Accuracy is assumed to fall as the rate rises.
    """
    count = 0

    def probe(rate: float) -> dict[str, float]:
        nonlocal count
        count += 1
        try:
            return evaluate(rate)
        except (
            PruningError,
            PluginError,
        ):  # a plan the model (or a plugin) cannot take is no better than one over the budget
            return {"accuracy_drop": math.inf}

    best: dict[str, Any] | None = None
    top = probe(high)
    if top["accuracy_drop"] <= max_drop:
        best = {"rate": high, **top}
    else:
        low_rate, high_rate = 0.0, high
        for _ in range(steps):
            mid = (low_rate + high_rate) / 2
            metrics = probe(mid)
            if metrics["accuracy_drop"] <= max_drop:
                low_rate, best = mid, {"rate": mid, **metrics}
            else:
                high_rate = mid
        if best is None:
            zero = probe(0.0)
            best = {"rate": 0.0, **zero} if zero["accuracy_drop"] <= max_drop else {"rate": None}
    return {**best, "evaluations": count}


class GlobalRanking:
    """Global plans of one study: the baseline's scores per importance, computed once, ranked together."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def plan(self, rate: float, method: str, rate_cap: float | dict[str, float]) -> Plan:
        """:func:`global_plan` of the study's baseline under importance ``method``, as a plan of the study."""
        evaluator = self.evaluator
        scores = group_scores(
            evaluator.baseline,
            evaluator.example,
            method,
            calibration=evaluator.calibration[:GRADIENT_BATCHES],
            batch_loss=evaluator.task.gradient_loss,
            scores=evaluator.scores,
        )
        searched = set(evaluator.groups)  # search.prune_only leaves the other groups whole
        sizes = {g: n for g, n in evaluator.structure.sizes.items() if g in searched}
        return evaluator.space.plan(**global_plan(rate, scores, sizes, method, rate_cap))


def find_references(
    evaluator: Evaluator,
    ranking: GlobalRanking | None = None,
    score: Callable[[Plan], dict[str, float]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The uniform and global baselines of a study, each at its largest rate within the budget, each probe
    scored by ``score`` (default: a trial's recalibrated evaluation; a fine-tuned budget's scores after
    its recipe)."""
    settings = evaluator.settings
    method = settings.importances[0]
    ranking = ranking or GlobalRanking(evaluator)
    plans = {
        "uniform": lambda rate: evaluator.space.uniform(rate, method),
        "global": lambda rate: ranking.plan(rate, method, settings.rate_max),
    }
    score = score or evaluator.evaluate
    keep = (
        "rate",
        "accuracy",
        "accuracy_drop",
        "flops",
        "params",
        "latency",
        "evaluations",
        "recalibrated_accuracy",
        "finetune_epochs",
    )
    found = {}
    for kind in KINDS:
        spent = []

        def probe(rate: float, kind: str = kind, spent: list = spent) -> dict[str, float]:
            metrics = score(plans[kind](rate))
            spent.append(metrics.get("finetune_epochs", 0.0))
            return metrics

        result = largest_feasible(probe, settings.rate_max, settings.max_accuracy_drop)
        if any(spent):  # the fine-tuning every probe of the bisection took, not only the chosen rate's
            result["finetune_epochs"] = sum(spent)
        found[kind] = {"importance": method, **{k: v for k, v in result.items() if k in keep}}
        if result["rate"] is not None:
            found[kind]["plan"] = plans[kind](result["rate"]).rates
    return found
