"""A plan fine-tuned hard, soft or gradually: the plan's widths in every mode, recovery, determinism."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune import AutopruneError, TrainSettings
from autoprune.batches import calibration_batches
from autoprune.engine import prunable_groups
from autoprune.engine.elastic import ChannelMasks
from autoprune.metrics import accuracy
from autoprune.plan import Plan, apply_plan
from autoprune.plan.elastic import MODES, finetune_plan, gradual_fraction, soft_interval
from autoprune.training import train
from autoprune.zoo import dataset_task

pytestmark = pytest.mark.baseline("standard")
RECIPE = TrainSettings(epochs=2, lr=0.01)
#: Long enough for every mode to recover: 36 steps re-rank a soft run's channels every 3 steps, and it can end
#: below the recalibrated cut (docs/pruning.md).
RECOVERY = TrainSettings(epochs=5, lr=0.01)


@pytest.fixture
def setup(baseline, digits):
    """The digits baseline, its example input, calibration batches, validation batches and a plan at rate 0.4."""
    task = dataset_task(digits)
    example = task.example(digits.val[0][0])
    groups = prunable_groups(baseline, example)
    plan = Plan(rates=dict.fromkeys(groups, 0.4), methods=dict.fromkeys(groups, "l1"))
    calibration = calibration_batches(digits, 4, 64, 0)
    return baseline, example, plan, calibration, list(DataLoader(digits.val, batch_size=256)), task


def shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_ends_in_the_plans_widths_and_recovers(setup, digits, mode):
    baseline, example, plan, calibration, val, task = setup
    before = {k: v.clone() for k, v in baseline.state_dict().items()}
    recalibrated = apply_plan(baseline, example, plan, calibration)
    tuned = finetune_plan(baseline, example, plan, digits, RECOVERY, calibration, mode=mode, task=task)
    assert shapes(tuned) == shapes(recalibrated)
    assert accuracy(tuned, val) > accuracy(recalibrated, val) + 5  # fine-tuning won back what pruning lost
    assert all(torch.equal(before[k], v) for k, v in baseline.state_dict().items())  # the baseline is kept


@pytest.mark.parametrize("mode", ["soft", "gradual"])
def test_elastic_fine_tuning_is_deterministic_and_keeps_rounding(setup, digits, mode):
    baseline, example, plan, calibration, _, task = setup
    plan = plan.replace(round_to=4)
    first, second = (
        finetune_plan(baseline, example, plan, digits, RECIPE, calibration, mode=mode, task=task) for _ in range(2)
    )
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    assert shapes(first) == shapes(apply_plan(baseline, example, plan, calibration))


def test_soft_fine_tuning_brings_back_a_channel_it_zeroed(setup, digits):
    """Soft pruning's point: a channel zeroed early is kept later, and another zeroed in its place."""
    baseline, example, plan, _, _, task = setup
    changed = {}
    for feedback in (True, False):
        model = copy.deepcopy(baseline)
        masks = ChannelMasks(model, example, dict(plan.rates), "l1", feedback=feedback)
        first = {g: set(i) for g, i in masks.select(1.0).items()}
        train(
            model,
            digits,
            TrainSettings(epochs=2, lr=0.05),
            task=task,
            after_step=lambda step, total, masks=masks: masks.select(1.0) if step % 4 == 0 else masks.reapply(),
        )
        last = {g: set(i) for g, i in masks.select(1.0).items()}
        assert {g: len(i) for g, i in last.items()} == {g: len(i) for g, i in first.items()}
        changed[feedback] = sum(len(first[g] - last[g]) for g in first)
    assert changed[True] > 0  # with feedback, zeroed channels came back
    assert changed[False] == 0  # without, a magnitude ranking keeps ranking zeroed weights last


@pytest.mark.parametrize("mode", MODES)
def test_fine_tuning_keeps_a_plans_weight_sparsity(setup, digits, mode):
    baseline, example, plan, calibration, _, task = setup
    plan = plan.replace(sparsity=dict.fromkeys(plan.rates, 0.5))

    def zeros(model) -> int:
        return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))

    pruned = apply_plan(baseline, example, plan, calibration)
    tuned = finetune_plan(baseline, example, plan, digits, RECIPE, calibration, mode=mode, task=task)
    assert zeros(pruned) > 0 and zeros(tuned) == zeros(pruned)


def test_the_schedules():
    assert soft_interval(100, 4) == 12  # an epoch is 25 steps: 12 zeroes at least 8 times
    assert soft_interval(1000, 4) == 125  # SFP's once per epoch, since that is at least 8 times
    assert soft_interval(3, 1) == 1
    assert [round(gradual_fraction(s, 10), 3) for s in (0, 5, 10, 12)] == [0.0, 0.875, 1.0, 1.0]


def test_an_unknown_mode_is_one_line_with_the_valid_ones(setup, digits):
    baseline, example, plan, calibration, _, _ = setup
    with pytest.raises(AutopruneError, match="'hard', 'soft', 'gradual', got 'elastic'"):
        finetune_plan(baseline, example, plan, digits, RECIPE, calibration, mode="elastic")
