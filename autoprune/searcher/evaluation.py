"""How a plan is scored: prune a copy, recalibrate BatchNorm, count correct answers, measure.

Everything that does not depend on the plan is built once per study
(:class:`Evaluator`): the example input, the fixed calibration batches, the
validation batches in a fixed shuffled order, the baseline's own metrics, and the
importance scores of every group (a cache that every trial reuses). Scoring after
BatchNorm recalibration ranks candidates far better than accuracy right after
pruning (Li et al., "EagleEye", ECCV 2020).

Validation runs batch by batch and can stop as soon as the verdict is known
(:class:`Budget`): ``"exact"`` stops once the errors counted so far exceed what
the budget allows even if every remaining image were right, so it never marks a
feasible plan infeasible; ``"statistical"`` also stops once a one-sided Wilson
upper confidence bound on the accuracy (Wilson, JASA 1927), at a false-stop
probability of ``STATISTICAL_DELTA`` per check, puts the plan over the budget.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..batches import calibration_batches, validation_batches
from ..engine import input_shape, prunable_groups
from ..engine.recovery import recalibrate_batchnorm
from ..errors import AutopruneError
from ..metrics import MetricContext, count_correct, measure_metrics
from ..plan import BaselineStructure, Plan, PlanSpace
from ..precision import autocast
from ..runtimes import Runtime
from ..settings import SearchSettings
from ..tasks import Task
from ..zoo import dataset_task
from .latency import LatencyTable, measure_table

#: What weight sparsity changes (:func:`autoprune.engine.sparsity_stats`).
SPARSE_MEASURES = ("sparsity", "nonzero_params", "size_bytes")
#: The statistical early stop's one-sided error probability per check, and the
#: fewest images it needs before it may stop.
STATISTICAL_DELTA = 1e-3
STATISTICAL_MIN_IMAGES = 256


@dataclass(frozen=True)
class Budget:
    """The accuracy constraint in counts: ``base_correct`` of ``total`` images, at most ``max_drop`` points lost."""

    base_correct: int
    total: int
    max_drop: float

    def drop(self, correct: int) -> float:
        """Points of accuracy lost with ``correct`` right answers in all."""
        return 100.0 * (self.base_correct - correct) / self.total

    def allows(self, correct: int) -> bool:
        return self.drop(correct) <= self.max_drop

    def stop_rule(self, mode: str):
        """``stop(correct, seen)`` for :func:`autoprune.metrics.count_correct`, or None for ``"off"``."""
        if mode == "off":
            return None
        z = _normal_quantile(1 - STATISTICAL_DELTA)

        def stop(correct: int, seen: int) -> bool:
            remaining = self.total - seen
            if not self.allows(correct + remaining):
                return True  # even a perfect rest cannot bring it within the budget
            if mode == "statistical" and seen >= STATISTICAL_MIN_IMAGES and remaining:
                likely_best = correct + max(wilson_upper(correct, seen, z), correct / seen) * remaining
                return not self.allows(likely_best)
            return False

        return stop

    def counted_drop(self, correct: int, seen: int) -> float:
        """The drop a count records: exact when every image was seen; for a count that stopped, the
        larger of the certain drop (a perfect rest) and the estimated one (the rest like the seen),
        which is over the budget whichever rule stopped it."""
        if seen == self.total:
            return self.drop(correct)
        remaining = self.total - seen
        return max(self.drop(correct + remaining), self.drop(correct + correct / seen * remaining))


def wilson_upper(successes: int, n: int, z: float) -> float:
    """One-sided Wilson score upper bound of a binomial proportion (Wilson, JASA 1927)."""
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def _normal_quantile(q: float) -> float:
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(q, dtype=torch.float64)))


def searched_groups(groups: list[str], prune_only: tuple[str, ...] = ()) -> list[str]:
    """The groups a study searches: every prunable group, or those whose module names start with one of
    ``prune_only`` (whole name components: ``backbone`` takes ``backbone.body.conv1``, not ``backbones.x``)."""
    if not groups:
        raise AutopruneError("the model has no prunable channel groups")
    if not prune_only:
        return groups
    kept = [g for g in groups if any(g == p or g.startswith(p.rstrip(".") + ".") for p in prune_only)]
    if not kept:
        tops = sorted({g.split(".")[0] for g in groups})
        patterns = any(c in p for p in prune_only for c in "*?[")
        raise AutopruneError(
            f"search.prune_only {list(prune_only)} matches none of the model's {len(groups)} "
            f"prunable groups{' (it takes module-name prefixes, not patterns)' if patterns else ''}; "
            f"their names start with: {', '.join(tops)}"
        )
    return kept


@dataclass
class Evaluator:
    """Scores plans against one baseline, on inputs fixed once per study."""

    baseline: nn.Module
    example: torch.Tensor
    timing_input: torch.Tensor
    groups: list[str]
    calibration: Iterable = field(repr=False)
    val_batches: Iterable = field(repr=False)
    settings: SearchSettings
    base: dict[str, float] = field(default_factory=dict)
    budget: Budget | None = None
    scores: dict = field(default_factory=dict, repr=False)
    structure: BaselineStructure | None = field(default=None, repr=False)
    context: MetricContext | None = field(default=None, repr=False)
    latency_table: LatencyTable | None = field(default=None, repr=False)
    task: Task = field(default_factory=lambda: Task(1), repr=False)
    #: The whole validation split (``val_batches`` itself unless ``val_images`` scores trials on a subset).
    full_val_batches: Iterable | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.structure is None:  # the baseline's groups, traced once when a plan first needs them
            self.structure = BaselineStructure(self.baseline, self.example)
        if self.context is None:
            self.context = MetricContext(
                self.example,
                self.timing_input,
                self.val_batches,
                self.settings.seed,
                self.baseline,
                self.calibration,
                self.settings,
                task=self.task,
            )

    @functools.cached_property
    def measured(self) -> list[str]:
        """The registered metrics measured on every plan besides accuracy: FLOPs and parameters, the
        objectives and the constraints (and the sparse measures when weights are pruned)."""
        names = ["flops", "params", *self.settings.objectives, *self.settings.bounds]
        if self.settings.granularities != ("channel",):
            names += SPARSE_MEASURES
        return [n for n in dict.fromkeys(names) if n not in ("accuracy", "accuracy_drop")]

    @classmethod
    def build(
        cls, model: nn.Module, data: Any, settings: SearchSettings, latency_table: LatencyTable | None = None
    ) -> Evaluator:
        """Trace the baseline, draw the calibration and validation batches, and measure the baseline.

        When latency is measured (an objective or a constraint), its table comes from
        ``latency_table`` (a resumed study's), the study's ``latency_table`` file, or is
        measured now; every plan's latency is then the table's prediction.
        """
        baseline = model.eval()
        device = next(baseline.parameters()).device
        task = dataset_task(data)
        sample = data.val[0][0].to(device)
        example = task.example(sample)
        timing_input = task.repeated(sample, settings.latency_batch_size)
        groups = searched_groups(prunable_groups(baseline, example), settings.prune_only)
        reading = {"workers": settings.data_workers, "pin_memory": device.type == "cuda"}
        calibration = calibration_batches(
            data, settings.calibration_batches, settings.batch_size, settings.seed, **reading
        )
        full = validation_batches(data, settings.batch_size, settings.seed, **reading)
        val_batches = full.subset(settings.val_images) if settings.val_images else full
        evaluator = cls(
            baseline,
            example,
            timing_input,
            groups,
            calibration,
            val_batches,
            settings,
            task=task,
            full_val_batches=full,
        )
        if "latency" in evaluator.measured:
            evaluator.use_latency_table(latency_table)
        with autocast(baseline, settings.amp):  # scored as every trial is
            if task.countable:
                correct, total = count_correct(baseline, val_batches)
                score = 100.0 * correct / total
            else:  # scored on the whole split: no count to stop early on
                correct, total = 0, val_batches.images
                score = task.score(baseline, val_batches)
        evaluator.budget = Budget(correct, total, settings.max_accuracy_drop)
        evaluator.base = {"accuracy": score, "accuracy_drop": 0.0, **evaluator.size(baseline, Plan())}
        evaluator.context.remember_baseline(evaluator.base)
        return evaluator

    def use_latency_table(self, table: LatencyTable | None) -> None:
        """Predict latency from ``table``, the study file's table, or one measured now."""
        settings, where = self.settings, "the study's latency table"
        if table is None and settings.latency_table:
            table, where = LatencyTable.read(settings.latency_table), f"latency table {settings.latency_table!r}"
        if table is None:
            table = measure_table(
                self.baseline,
                self.example,
                self.timing_input,
                self.groups,
                settings.rate_max,
                Runtime.of(settings),
                *settings.channel_rounding,
            )
        table.check_fits(self.groups, *input_shape(self.timing_input), where, Runtime.of(settings))
        self.latency_table = table
        self.context.predict_latency = lambda plan: table.predict(plan.removed_fractions(self.structure.sizes))

    def size(self, model: nn.Module, plan: Plan | None = None) -> dict[str, float]:
        """The plan's metrics besides accuracy (:attr:`measured`), each by its registered function."""
        self.context.plan = plan
        try:
            return measure_metrics(model, self.measured, self.context)
        finally:
            self.context.plan = None

    @functools.cached_property
    def space(self) -> PlanSpace:
        """The study's plans over its searched groups (every group up to ``rate_max``)."""
        return PlanSpace(self.settings, tuple(self.groups))

    def apply(self, plan: Plan) -> nn.Module:
        """``plan`` applied to the baseline as a trial is, with the study's calibration and score cache."""
        return plan.apply(
            self.baseline, self.example, self.calibration, scores=self.scores, structure=self.structure, task=self.task
        )

    def evaluate(self, plan: Plan, early_stop: str | None = None, budget: Budget | None = None) -> dict[str, float]:
        """The metrics of ``plan`` (as the study's :attr:`space` makes it): accuracy and its drop,
        sizes, and the seconds each step took.

        A count that stopped early records ``evaluated`` (images seen) below the
        validation size, and a drop that is certain (``"exact"``) or likely
        (``"statistical"``) to exceed the budget: the larger of the drop that a
        perfect rest would give and the drop the images seen so far estimate.
        """
        return self.scored_model(plan, early_stop, budget)[1]

    def scored_model(
        self, plan: Plan, early_stop: str | None = None, budget: Budget | None = None
    ) -> tuple[nn.Module, dict[str, float]]:
        """The pruned and recalibrated model of ``plan`` with its metrics (:meth:`evaluate`)."""
        start = time.perf_counter()
        model = plan.pruned(
            self.baseline, self.example, self.calibration, scores=self.scores, structure=self.structure, task=self.task
        )
        pruned_at = time.perf_counter()
        recalibrate_batchnorm(model, self.calibration)
        recalibrated_at = time.perf_counter()
        metrics = self.score(model, early_stop, budget)
        evaluated_at = time.perf_counter()
        metrics.update(self.size(model, plan))
        metrics.update(
            prune_seconds=pruned_at - start,
            recalibrate_seconds=recalibrated_at - pruned_at,
            eval_seconds=evaluated_at - recalibrated_at,
            measure_seconds=time.perf_counter() - evaluated_at,
        )
        return model, metrics

    def score(self, model: nn.Module, early_stop: str | None = None, budget: Budget | None = None) -> dict[str, float]:
        """``accuracy``, ``accuracy_drop`` and ``evaluated`` of ``model`` on the trials' validation images
        (and a non-countable task's other scores), stopping early under ``budget`` by ``early_stop``."""
        mode = self.settings.early_stop if early_stop is None else early_stop
        budget = self.budget if budget is None else budget
        extra: dict[str, float] = {}
        with autocast(model, self.settings.amp):
            if self.task.countable:
                correct, seen = count_correct(model, self.val_batches, stop=budget.stop_rule(mode))
                drop = budget.counted_drop(correct, seen)
                accuracy = 100.0 * correct / seen if seen == budget.total else self.base["accuracy"] - drop
            else:
                extra = self.task.scores(model, self.val_batches)
                accuracy, seen = extra.pop(self.task.metric), budget.total
                drop = self.base["accuracy"] - accuracy
        return {"accuracy": accuracy, "accuracy_drop": drop, "evaluated": seen, **extra}
