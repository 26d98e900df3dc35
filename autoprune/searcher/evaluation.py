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

import copy
import functools
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..engine import (
    DEFAULT_WEIGHT_IMPORTANCE,
    InputGrams,
    group_layers,
    group_sizes,
    input_shape,
    make_permanent,
    prunable_groups,
    prune,
    prune_n_m,
    prune_weights,
    reconstruct_layers,
    removal_count,
    weight_scores,
)
from ..errors import AutopruneError
from ..metrics import MetricContext, count_correct, measure_metrics
from ..results.record import Plan
from ..settings import FINETUNE, SearchSettings
from ..tasks import Task
from ..training import train_steps
from ..zoo import dataset_task
from .latency import LatencyTable, effective_rates, measure_table
from .recovery import recalibrate_batchnorm

#: What weight sparsity changes (:func:`autoprune.engine.sparsity_stats`).
SPARSE_MEASURES = ("sparsity", "nonzero_params", "size_bytes")
#: The fine-tuning recipe of iterative pruning's recovery steps (its learning rate, momentum, weight decay).
RECOVERY = FINETUNE

#: Calibration batches whose gradients feed importances registered with ``needs_grads``.
GRADIENT_BATCHES = 4
#: Calibration batches whose inputs the layers that lost channels are refitted on (``reconstruct``).
RECONSTRUCTION_BATCHES = 4
#: The statistical early stop's one-sided error probability per check, and the
#: fewest images it needs before it may stop.
STATISTICAL_DELTA = 1e-3
STATISTICAL_MIN_IMAGES = 256


def calibration_batches(data: Any, count: int, batch_size: int, seed: int) -> list:
    """The fixed training batches every trial recalibrates BatchNorm on.

    The same for the same seed, in any process: the order comes from a seeded
    generator, and random augmentations (which draw from torch's, Python's and
    NumPy's global generators) run under generators seeded from ``seed``, whose
    previous state is restored afterwards.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            loader = DataLoader(
                data.train,
                batch_size=batch_size,
                shuffle=True,
                collate_fn=dataset_task(data).collate,
                generator=torch.Generator().manual_seed(seed),
            )
            return [batch for _, batch in zip(range(count), loader)]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def validation_batches(data: Any, batch_size: int, seed: int) -> list:
    """The whole validation split in a fixed shuffled order, so a stopped count has seen every class."""
    loader = DataLoader(
        data.val,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=dataset_task(data).collate,
        generator=torch.Generator().manual_seed(seed),
    )
    return list(loader)


def apply_plan(
    baseline: nn.Module, example_inputs: Any, plan: Plan, calibration: list, scores: dict | None = None
) -> nn.Module:
    """Prune a copy of ``baseline`` with ``plan`` and recalibrate its BatchNorm statistics."""
    return recalibrate_batchnorm(pruned_copy(baseline, example_inputs, plan, calibration, scores), calibration)


def pruned_copy(
    baseline: nn.Module,
    example_inputs: Any,
    plan: Plan,
    calibration: list,
    scores: dict | None = None,
    structure: BaselineStructure | None = None,
) -> nn.Module:
    """A copy of ``baseline`` pruned with ``plan``, before its final BatchNorm recalibration.

    With ``plan["steps"] = K`` (iterative pruning), the plan's channel counts are
    reached in K equal steps, each followed by BatchNorm recalibration and
    ``plan["recovery_steps"]`` optimizer steps of fine-tuning on the calibration
    batches; channels are ranked anew on the partly pruned model at every step.
    With ``plan["reconstruct"]``, every layer that lost input channels is refitted
    by least squares to the outputs it had before each step
    (:func:`~autoprune.engine.reconstruct_layers`).
    ``structure``: the baseline's groups as a study keeps them (traced here when None).
    """
    structure = structure or BaselineStructure(baseline, example_inputs)
    model = copy.deepcopy(baseline)
    steps = int(plan.get("steps", 1))
    sizes = structure.sizes if steps > 1 else {}  # traced only for a plan in several steps
    round_to = int(plan.get("round_to", 1)) if steps == 1 else 1  # several steps: in their targets
    reconstruct = bool(plan.get("reconstruct"))
    for k, (step_rates, cached) in enumerate(pruning_steps(sizes, plan, scores), start=1):
        removed: dict | None = None
        if reconstruct:  # the model before this step, and its layers' input statistics
            removed, unpruned = {}, baseline if k == 1 else copy.deepcopy(model)
            grams = (
                structure.grams(calibration) if k == 1 else InputGrams(unpruned, calibration[:RECONSTRUCTION_BATCHES])
            )
        model = prune(
            model,
            example_inputs,
            step_rates,
            importance=plan["methods"],
            calibration=calibration[:GRADIENT_BATCHES],
            scores=cached,
            round_to=round_to,
            removed=removed,
        )
        if reconstruct:
            reconstruct_layers(model, unpruned, grams, removed)
        if steps > 1 and (k < steps or plan.get("recovery_steps")):
            recalibrate_batchnorm(model, calibration)
            if plan.get("recovery_steps"):
                train_steps(model, calibration, plan["recovery_steps"], RECOVERY)
    if plan.get("sparsity") or plan.get("nm"):
        apply_weight_sparsity(model, structure.layers, plan, calibration[:GRADIENT_BATCHES])
    return model


class BaselineStructure:
    """What a plan needs to know of the baseline's groups, traced once and only when asked:
    ``sizes`` (:func:`~autoprune.engine.group_sizes`) and ``layers`` (:func:`~autoprune.engine.group_layers`).
    Pruning keeps every group's name and every layer's, so they hold for any plan of the baseline."""

    def __init__(self, baseline: nn.Module, example_inputs: Any) -> None:
        self.baseline, self.example_inputs = baseline, example_inputs

    @functools.cached_property
    def sizes(self) -> dict[str, tuple[int, int]]:
        return group_sizes(self.baseline, self.example_inputs)

    @functools.cached_property
    def layers(self) -> dict[str, list[str]]:
        return group_layers(self.baseline, self.example_inputs)

    def grams(self, calibration: list) -> InputGrams:
        """The baseline's :class:`~autoprune.engine.InputGrams` on the first calibration batches, kept."""
        if getattr(self, "_grams", None) is None or self._grams_of is not calibration:
            self._grams = InputGrams(self.baseline, calibration[:RECONSTRUCTION_BATCHES])
            self._grams_of = calibration
        return self._grams


def apply_weight_sparsity(
    model: nn.Module, layers: dict[str, list[str]], plan: Plan, calibration: list | None = None
) -> nn.Module:
    """Zero the weights the plan's ``sparsity`` and ``nm`` ask for in each group's layers (``layers``,
    as :func:`~autoprune.engine.group_layers` gives them), permanently, ranked by the plan's
    ``weight_importance`` (magnitude when it names none; ``calibration`` for one that needs gradients)."""
    sparsity = {layer: rate for group, rate in plan.get("sparsity", {}).items() for layer in layers[group]}
    nm_layers = [layer for group in plan.get("nm", {}).get("groups", ()) for layer in layers[group]]
    scores = weight_scores(
        model, [*sparsity, *nm_layers], plan.get("weight_importance", DEFAULT_WEIGHT_IMPORTANCE), calibration
    )
    if sparsity:
        prune_weights(model, sparsity, scores)
    if nm_layers:
        n, m = plan["nm"].get("pattern", (2, 4))
        prune_n_m(model, n, m, nm_layers, scores)
    return make_permanent(model)


def pruning_steps(sizes: dict[str, tuple[int, int]], plan: Plan, scores: dict | None):
    """The rates of each of the plan's steps, relative to the channels left, with the score cache each may use.

    Step k removes channels until ``floor(n * k / K)`` of a group's are gone, where
    ``n`` is what the one-shot plan removes (:func:`~autoprune.engine.removal_count`,
    with the plan's ``round_to``), so the last step ends at exactly its widths.
    Only the first step prunes the baseline itself, so only it may use ``scores``.
    ``sizes``: the baseline's ``{group: (channels, channel groups)}``.
    """
    steps = int(plan.get("steps", 1))
    if steps == 1:
        yield plan["rates"], scores
        return
    removed = dict.fromkeys(plan["rates"], 0)
    final = {}
    for group, rate in plan["rates"].items():
        channels, channel_groups = sizes[group]
        final[group] = removal_count(channels // channel_groups, rate, channel_groups, int(plan.get("round_to", 1)))
    for k in range(1, steps + 1):
        rates = {}
        for group in plan["rates"]:
            channels, channel_groups = sizes[group]
            size = channels // channel_groups
            target = final[group] * k // steps
            rates[group] = (target - removed[group]) / (size - removed[group])
            removed[group] = target
        yield rates, scores if k == 1 else None


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
        raise AutopruneError(
            f"search.prune_only {list(prune_only)} matches none of the model's {len(groups)} "
            f"prunable groups; their names start with: {', '.join(tops)}"
        )
    return kept


@dataclass
class Evaluator:
    """Scores plans against one baseline, on inputs fixed once per study."""

    baseline: nn.Module
    example: torch.Tensor
    timing_input: torch.Tensor
    groups: list[str]
    calibration: list = field(repr=False)
    val_batches: list = field(repr=False)
    settings: SearchSettings
    base: dict[str, float] = field(default_factory=dict)
    budget: Budget | None = None
    scores: dict = field(default_factory=dict, repr=False)
    structure: BaselineStructure | None = field(default=None, repr=False)
    context: MetricContext | None = field(default=None, repr=False)
    latency_table: LatencyTable | None = field(default=None, repr=False)
    task: Task = field(default_factory=lambda: Task(1), repr=False)

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
        calibration = calibration_batches(data, settings.calibration_batches, settings.batch_size, settings.seed)
        val_batches = validation_batches(data, settings.batch_size, settings.seed)
        evaluator = cls(baseline, example, timing_input, groups, calibration, val_batches, settings, task=task)
        if "latency" in evaluator.measured:
            evaluator.use_latency_table(latency_table)
        if task.countable:
            correct, total = count_correct(baseline, val_batches)
            score = 100.0 * correct / total
        else:  # scored on the whole split: no count to stop early on
            correct, total = 0, sum(len(targets) for _, targets in val_batches)
            score = task.score(baseline, val_batches)
        evaluator.budget = Budget(correct, total, settings.max_accuracy_drop)
        evaluator.base = {"accuracy": score, "accuracy_drop": 0.0, **evaluator.size(baseline, {"rates": {}})}
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
                settings.latency_device,
                settings.round_to,
            )
        table.check_fits(self.groups, *input_shape(self.timing_input), where)
        self.latency_table = table
        self.context.predict_latency = lambda plan: table.predict(effective_rates(plan, self.structure.sizes))

    def size(self, model: nn.Module, plan: Plan | None = None) -> dict[str, float]:
        """The plan's metrics besides accuracy (:attr:`measured`), each by its registered function."""
        self.context.plan = plan
        try:
            return measure_metrics(model, self.measured, self.context)
        finally:
            self.context.plan = None

    def evaluate(self, plan: Plan, early_stop: str | None = None, budget: Budget | None = None) -> dict[str, float]:
        """The metrics of ``plan``: accuracy and its drop, sizes, and the seconds each step took.

        A count that stopped early records ``evaluated`` (images seen) below the
        validation size, and a drop that is certain (``"exact"``) or likely
        (``"statistical"``) to exceed the budget: the larger of the drop that a
        perfect rest would give and the drop the images seen so far estimate.
        """
        mode = self.settings.early_stop if early_stop is None else early_stop
        budget = self.budget if budget is None else budget
        if self.settings.round_to > 1:
            plan = {**plan, "round_to": self.settings.round_to}
        if self.settings.reconstruct:
            plan = {**plan, "reconstruct": True}
        start = time.perf_counter()
        model = pruned_copy(self.baseline, self.example, plan, self.calibration, self.scores, self.structure)
        pruned_at = time.perf_counter()
        recalibrate_batchnorm(model, self.calibration)
        recalibrated_at = time.perf_counter()
        extra: dict[str, float] = {}
        if self.task.countable:
            correct, seen = count_correct(model, self.val_batches, stop=budget.stop_rule(mode))
            drop = budget.counted_drop(correct, seen)
            accuracy = 100.0 * correct / seen if seen == budget.total else self.base["accuracy"] - drop
        else:
            extra = self.task.scores(model, self.val_batches)
            accuracy, seen = extra.pop(self.task.metric), budget.total
            drop = self.base["accuracy"] - accuracy
        evaluated_at = time.perf_counter()
        metrics = {"accuracy": accuracy, "accuracy_drop": drop, "evaluated": seen, **extra, **self.size(model, plan)}
        metrics.update(
            prune_seconds=pruned_at - start,
            recalibrate_seconds=recalibrated_at - pruned_at,
            eval_seconds=evaluated_at - recalibrated_at,
            measure_seconds=time.perf_counter() - evaluated_at,
        )
        return metrics
