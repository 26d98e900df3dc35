"""A plan fine-tuned three ways: cut then fine-tuned (hard), or reached while fine-tuning (soft, gradual).

- ``"hard"``: the plan's channels are removed (:func:`~autoprune.plan.apply_plan`), then the smaller
  model is fine-tuned; a channel removed by mistake is gone.
- ``"soft"``: the unpruned baseline is fine-tuned while the channels the plan's rates and importances
  select are zeroed (:mod:`autoprune.engine.elastic`: the weights that read them), so every step
  trains the pruned network, but the zeroed weights keep dense values that every step's update moves,
  and the channels are ranked anew on those every :func:`soft_interval` steps: a channel zeroed early
  whose weights would have grown comes back, and another is zeroed in its place. That is soft,
  recoverable pruning (Soft Filter Pruning: He et al., IJCAI 2018, which re-ranks once per epoch)
  with the error feedback of Dynamic Pruning with Feedback (Lin et al., ICLR 2020); a recipe of few
  epochs re-ranks at least :data:`MIN_UPDATES` times. The ranking stops after :data:`RANKING_END`
  of the steps; the rest fine-tunes the network around the final selection, which is then cut.
- ``"gradual"``: each group's rate rises from 0 to the plan's on the cubic schedule of automated
  gradual pruning (Zhu and Gupta, "To prune, or not to prune", 2017), ``rate * (1 - (1 - t)^3)``
  over the first :data:`RANKING_END` of the steps, re-ranked every :func:`soft_interval` steps;
  zeroed channels are held at zero after every step, and the last part of the recipe fine-tunes the
  network around the final selection before it is cut.

All three end in exactly the channel counts the plan gives the baseline (its rates, ``round_to`` and
``round_min``); then the plan's weight sparsity, if any, is applied. Soft and gradual fine-tuning
replace a plan's steps, recovery steps and least-squares reconstruction, which exist to soften a
one-shot cut.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from ..engine import group_layers
from ..engine.elastic import ChannelMasks
from ..errors import AutopruneError
from ..settings import FINETUNE_MODES
from ..training import train
from .apply import GRADIENT_BATCHES, apply_plan, apply_weight_sparsity

if TYPE_CHECKING:
    from ..settings import TrainSettings
    from ..tasks import Task
    from .plan import Plan

#: How a plan is fine-tuned (see the module docstring).
MODES = FINETUNE_MODES
#: The fewest times soft and gradual fine-tuning rank the channels anew, however short the recipe.
MIN_UPDATES = 8
#: The share of the steps over which soft fine-tuning re-ranks and gradual fine-tuning raises the rates to
#: the plan's; the rest fine-tunes the final selection.
RANKING_END = 0.75


def soft_interval(total: int, epochs: int) -> int:
    """Steps between two rankings: one epoch (Soft Filter Pruning's), or less, so that ``total`` steps
    rank at least :data:`MIN_UPDATES` times."""
    per_epoch = max(1, total // max(1, epochs))
    return max(1, min(per_epoch, total // MIN_UPDATES))


def gradual_fraction(step: int, end: int) -> float:
    """The share of each group's final count zeroed at ``step`` of a gradual schedule ending at ``end``:
    ``1 - (1 - step / end)^3`` (Zhu and Gupta, 2017), 1 from ``end`` on."""
    if step >= end:
        return 1.0
    return 1.0 - (1.0 - step / end) ** 3


class ElasticRun:
    """One soft or gradual fine-tuning of ``plan`` on a copy of ``baseline``: train :attr:`model` with
    :attr:`after_step` (:func:`~autoprune.training.train`'s or ``train_rungs``'), then :meth:`finish`.

    Between steps :attr:`model` computes the network its zeroed channels leave (exactly the plan's, for a
    soft run in a BatchNorm network; for a gradual one, a share of it until the schedule ends), so a
    fine-tuned budget scores it at its rungs as it is."""

    def __init__(
        self,
        baseline: nn.Module,
        example_inputs: Any,
        plan: Plan,
        recipe: TrainSettings,
        calibration: list,
        *,
        mode: str,
        task: Task | None = None,
    ) -> None:
        if mode not in ("soft", "gradual"):
            raise AutopruneError(f"an elastic fine-tuning is 'soft' or 'gradual', got {mode!r}")
        self.baseline, self.example_inputs, self.plan = baseline, example_inputs, plan
        self.calibration, self.task, self.recipe = calibration, task, recipe
        self.model = copy.deepcopy(baseline)
        self.masks = ChannelMasks(
            self.model,
            example_inputs,
            dict(plan.rates),
            dict(plan.methods),
            calibration=calibration[:GRADIENT_BATCHES],
            batch_loss=None if task is None else task.gradient_loss,
            round_to=plan.round_to,
            round_min=plan.round_min,
            feedback=mode == "soft",
        )
        self.after_step = _soft(self.masks, recipe) if mode == "soft" else _gradual(self.masks, recipe)
        self._finished: nn.Module | None = None

    def finish(self) -> nn.Module:
        """The fine-tuned model cut to the plan's widths, with the plan's weight sparsity (in eval mode); cut
        once, the same model on every later call."""
        if self._finished is None:
            if self.recipe.epochs == 0 or not self.masks.selected:
                self.masks.select(1.0)  # no steps: the one ranking there is
            model = self.masks.cut()
            if self.plan.prunes_weights:
                layers = group_layers(self.baseline, self.example_inputs)
                apply_weight_sparsity(model, layers, self.plan, self.calibration[:GRADIENT_BATCHES], task=self.task)
            self._finished = model.eval()
        return self._finished


def finetune_plan(
    baseline: nn.Module,
    example_inputs: Any,
    plan: Plan,
    data: Any,
    recipe: TrainSettings,
    calibration: list,
    *,
    mode: str = "hard",
    seed: int = 0,
    task: Task | None = None,
    teacher: nn.Module | None = None,
    amp: str = "off",
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """A copy of ``baseline`` pruned with ``plan`` and fine-tuned with ``recipe`` on ``data`` in ``mode``
    (``"hard"``, ``"soft"`` or ``"gradual"``; the module docstring says what each does).

    ``calibration``: the study's calibration batches (the hard cut's recalibration and reconstruction,
    the gradients of an importance that needs them). ``seed``, ``teacher``, ``amp`` and ``log`` are
    :func:`~autoprune.training.train`'s. The baseline is not changed.
    """
    if mode not in MODES:
        raise AutopruneError(f"finetune mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if mode == "hard":
        model = apply_plan(baseline, example_inputs, plan, calibration, task=task)
        hook = plan.finetune_hook(model)
        return train(model, data, recipe, seed=seed, teacher=teacher, log=log, task=task, amp=amp, after_step=hook)
    run = ElasticRun(baseline, example_inputs, plan, recipe, calibration, mode=mode, task=task)
    train(run.model, data, recipe, seed=seed, teacher=teacher, log=log, task=task, amp=amp, after_step=run.after_step)
    return run.finish()


def _soft(masks: ChannelMasks, recipe: TrainSettings) -> Callable[[int, int], None]:
    """Zero the selected channels from the first step on, their dense weights moved by every step, and
    rank them anew on those every interval until the ranking ends."""
    masks.select(1.0)
    return _ranking(masks, recipe, lambda step, end: 1.0)


def _gradual(masks: ChannelMasks, recipe: TrainSettings) -> Callable[[int, int], None]:
    """Raise the zeroed share on the cubic schedule, every interval, holding the zeroed channels at zero."""
    return _ranking(masks, recipe, gradual_fraction)


def _ranking(
    masks: ChannelMasks, recipe: TrainSettings, fraction: Callable[[int, int], float]
) -> Callable[[int, int], None]:
    """The ``after_step`` of both: rank and zero ``fraction(step, end)`` of each group's count every
    :func:`soft_interval` steps until ``end`` (:data:`RANKING_END` of the steps), and zero the same channels
    again after every other step."""

    def after_step(step: int, total: int) -> None:
        end = max(1, math.floor(RANKING_END * total))
        interval = soft_interval(end, max(1, round(recipe.epochs * RANKING_END)))
        if step <= end and (step % interval == 0 or step == end):
            masks.select(fraction(step, end))
        else:
            masks.reapply()

    return after_step
