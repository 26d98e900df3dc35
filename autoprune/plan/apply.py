"""A plan applied to a model: channels removed (in steps, refit), then single weights zeroed.

The search scores a plan, the rebuild and the export reproduce it, and all of them
call :func:`apply_plan` (through :meth:`Plan.apply`), so the model a study exports is
the model its trial was scored on.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ..engine import (
    InputGrams,
    group_layers,
    group_sizes,
    make_permanent,
    prune,
    prune_n_m,
    prune_weights,
    reconstruct_layers,
    removal_count,
    weight_scores,
)
from ..engine.recovery import recalibrate_batchnorm
from ..settings import FINETUNE
from ..training import train_steps

if TYPE_CHECKING:
    from ..tasks import Task
    from .plan import Plan

#: The fine-tuning recipe of iterative pruning's recovery steps (its learning rate, momentum, weight decay).
RECOVERY = FINETUNE
#: Calibration batches whose gradients feed importances registered with ``needs_grads``.
GRADIENT_BATCHES = 4
#: Calibration batches whose inputs the layers that lost channels are refitted on (``reconstruct``).
RECONSTRUCTION_BATCHES = 4


class BaselineStructure:
    """What a plan needs to know of the baseline's groups, traced once and only when asked:
    ``sizes`` (:func:`~autoprune.engine.group_sizes`) and ``layers`` (:func:`~autoprune.engine.group_layers`).
    Pruning keeps every group's name and every layer's, so they hold for any plan of the baseline."""

    def __init__(self, baseline: nn.Module, example_inputs: Any) -> None:
        self.baseline, self.example_inputs = baseline, example_inputs
        self._grams: InputGrams | None = None
        self._grams_of: list | None = None

    @functools.cached_property
    def sizes(self) -> dict[str, tuple[int, int]]:
        return group_sizes(self.baseline, self.example_inputs)

    @functools.cached_property
    def layers(self) -> dict[str, list[str]]:
        return group_layers(self.baseline, self.example_inputs)

    def grams(self, calibration: list) -> InputGrams:
        """The baseline's :class:`~autoprune.engine.InputGrams` on the first calibration batches, kept."""
        if self._grams is None or self._grams_of is not calibration:
            self._grams = InputGrams(self.baseline, calibration[:RECONSTRUCTION_BATCHES])
            self._grams_of = calibration
        return self._grams


def apply_plan(
    baseline: nn.Module,
    example_inputs: Any,
    plan: Plan,
    calibration: list,
    *,
    scores: dict | None = None,
    structure: BaselineStructure | None = None,
    task: Task | None = None,
) -> nn.Module:
    """Prune a copy of ``baseline`` with ``plan`` and recalibrate its BatchNorm statistics."""
    model = pruned_copy(baseline, example_inputs, plan, calibration, scores=scores, structure=structure, task=task)
    return recalibrate_batchnorm(model, calibration)


def pruned_copy(
    baseline: nn.Module,
    example_inputs: Any,
    plan: Plan,
    calibration: list,
    *,
    scores: dict | None = None,
    structure: BaselineStructure | None = None,
    task: Task | None = None,
) -> nn.Module:
    """A copy of ``baseline`` pruned with ``plan``, before its final BatchNorm recalibration.

    With ``plan.steps = K`` (iterative pruning), the plan's channel counts are
    reached in K equal steps, each followed by BatchNorm recalibration and
    ``plan.recovery_steps`` optimizer steps of fine-tuning on the calibration
    batches; channels are ranked anew on the partly pruned model at every step.
    With ``plan.reconstruct``, every layer that lost input channels is refitted
    by least squares to the outputs it had before each step
    (:func:`~autoprune.engine.reconstruct_layers`).
    ``scores``: importance scores of the baseline's groups, a cache the first step may use;
    ``structure``: the baseline's groups as a study keeps them (traced here when None);
    ``task``: the data's :class:`~autoprune.Task`, whose loss gives importances their gradients
    and recovery steps their loss (classification when None).
    """
    batch_loss = None if task is None else task.gradient_loss
    structure = structure or BaselineStructure(baseline, example_inputs)
    model = copy.deepcopy(baseline)
    steps = plan.steps
    sizes = structure.sizes if steps > 1 else {}  # traced only for a plan in several steps
    round_to = plan.round_to if steps == 1 else 1  # several steps: in their targets
    for k, (step_rates, cached) in enumerate(pruning_steps(sizes, plan, scores), start=1):
        removed: dict | None = None
        if plan.reconstruct:  # the model before this step, and its layers' input statistics
            removed, unpruned = {}, baseline if k == 1 else copy.deepcopy(model)
            grams = (
                structure.grams(calibration) if k == 1 else InputGrams(unpruned, calibration[:RECONSTRUCTION_BATCHES])
            )
        model = prune(
            model,
            example_inputs,
            step_rates,
            importance=dict(plan.methods),
            calibration=calibration[:GRADIENT_BATCHES],
            batch_loss=batch_loss,
            scores=cached,
            round_to=round_to,
            round_min=plan.round_min,
            removed=removed,
        )
        if plan.reconstruct:
            reconstruct_layers(model, unpruned, grams, removed)
        if steps > 1 and (k < steps or plan.recovery_steps):
            recalibrate_batchnorm(model, calibration)
            if plan.recovery_steps:
                train_steps(model, calibration, plan.recovery_steps, RECOVERY, task=task)
    if plan.prunes_weights:
        apply_weight_sparsity(model, structure.layers, plan, calibration[:GRADIENT_BATCHES], task=task)
    return model


def apply_weight_sparsity(
    model: nn.Module,
    layers: Mapping[str, list[str]],
    plan: Plan,
    calibration: list | None = None,
    *,
    task: Task | None = None,
) -> nn.Module:
    """Zero the weights the plan's ``sparsity`` and ``nm_groups`` ask for in each group's layers
    (``layers``, as :func:`~autoprune.engine.group_layers` gives them), permanently, ranked by the
    plan's ``weight_importance`` (``calibration`` for one that needs gradients)."""
    sparsity = {layer: rate for group, rate in plan.sparsity.items() for layer in layers[group]}
    nm_layers = [layer for group in plan.nm_groups for layer in layers[group]]
    batch_loss = None if task is None else task.gradient_loss
    scores = weight_scores(model, [*sparsity, *nm_layers], plan.weight_importance, calibration, batch_loss=batch_loss)
    if sparsity:
        prune_weights(model, sparsity, scores)
    if nm_layers:
        n, m = plan.nm_pattern
        prune_n_m(model, n, m, nm_layers, scores)
    return make_permanent(model)


def pruning_steps(
    sizes: Mapping[str, tuple[int, int]], plan: Plan, scores: dict | None
) -> Iterator[tuple[dict[str, float], dict | None]]:
    """The rates of each of the plan's steps, relative to the channels left, with the score cache each may use.

    Step k removes channels until ``floor(n * k / K)`` of a group's are gone, where
    ``n`` is what the one-shot plan removes (:func:`~autoprune.engine.removal_count`,
    with the plan's ``round_to`` and ``round_min``), so the last step ends at exactly its widths.
    Only the first step prunes the baseline itself, so only it may use ``scores``.
    ``sizes``: the baseline's ``{group: (channels, channel groups)}``.
    """
    steps = plan.steps
    if steps == 1:
        yield dict(plan.rates), scores
        return
    removed = dict.fromkeys(plan.rates, 0)
    final = {}
    for group, rate in plan.rates.items():
        channels, channel_groups = sizes[group]
        final[group] = removal_count(channels // channel_groups, rate, channel_groups, plan.rounding(channels))
    for k in range(1, steps + 1):
        rates = {}
        for group in plan.rates:
            channels, channel_groups = sizes[group]
            size = channels // channel_groups
            target = final[group] * k // steps
            rates[group] = (target - removed[group]) / (size - removed[group])
            removed[group] = target
        yield rates, scores if k == 1 else None
