"""Least-squares reconstruction of the layers that lost input channels (autoprune.engine.reconstruct)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ConcatNet, DepthwiseNet
from torch import nn

import autoprune
from autoprune import SearchSettings
from autoprune.engine import InputGrams, reconstruct_layers
from autoprune.searcher import Evaluator


def lowest_index_first(group):
    """An importance that removes a group's first channels: the removed indices are known in advance."""
    return torch.arange(group.num_channels, dtype=torch.float32)


def test_prune_reports_the_channels_it_removed_from_each_layer_in_the_layers_own_indices(example):
    model = ConcatNet().eval()
    removed: dict = {}
    autoprune.prune(model, example, {"right.0": 0.5, "stem.0": 0.25}, importance=lowest_index_first, removed=removed)
    assert removed["right.0"]["out"] == list(range(10))
    assert removed["merge.0"]["in"] == list(range(12, 22))  # after the 12 channels of the left branch
    assert removed["stem.0"]["out"] == list(range(4))
    assert removed["left.0"]["in"] == removed["right.0"]["in"] == list(range(4))
    assert "merge.0" not in {n for n, r in removed.items() if r.get("out")}
    assert model.merge[0].in_channels == 22 and model.right[0].out_channels == 10


def test_removed_channels_of_a_layer_reading_two_pruned_groups_are_in_its_unpruned_indices(example):
    """Both inputs of a concatenation pruned: the second group's indices in the consumer are counted from
    the unpruned layer, not from the layer the first group left (a C2f block, a DenseNet layer)."""
    model = ConcatNet().eval()
    original = copy.deepcopy(model)
    removed: dict = {}
    autoprune.prune(model, example, {"left.0": 0.5, "right.0": 0.5}, importance=lowest_index_first, removed=removed)
    assert removed["merge.0"]["in"] == [*range(6), *range(12, 22)]
    pruned, unpruned = dict(model.named_modules()), dict(original.named_modules())
    for name, sides in removed.items():  # every layer's weights are the unpruned ones minus what it reports
        weight = unpruned[name].weight.detach()
        kept_out = [i for i in range(weight.shape[0]) if i not in sides.get("out", ())]
        kept_in = [i for i in range(weight.shape[1]) if i not in sides.get("in", ())]
        assert torch.equal(pruned[name].weight.detach(), weight[kept_out][:, kept_in]), name


class Redundant(nn.Module):
    """A convolution whose last four channels repeat its first four, read by a convolution and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, padding=1)
        self.second = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.first.weight[4:] = self.first.weight[:4]
            self.first.bias[4:] = self.first.bias[:4]

    def forward(self, x):
        return self.fc(torch.relu(self.second(torch.relu(self.first(x)))).mean((2, 3)))


def second_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.second(torch.relu(model.first(x)))


def test_reconstruction_recovers_the_outputs_that_redundant_removed_channels_carried():
    torch.manual_seed(0)
    model = Redundant().eval()
    batches = [(torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(i)), None) for i in range(3)]
    x = batches[0][0]
    wanted = second_outputs(model, x)
    scale = wanted.abs().max().item()
    # the kept channels (the last four) copy the removed ones, so the second layer can be refitted exactly
    pruned = autoprune.prune(
        copy.deepcopy(model), x, {"first": 0.5}, importance=lowest_index_first, removed=(removed := {})
    )
    plain_error = (second_outputs(pruned, x) - wanted).abs().max().item()
    assert plain_error > 0.1 * scale
    grams = InputGrams(model, batches)
    assert reconstruct_layers(pruned, model, grams, removed, ridge=1e-9) == ["second"]
    assert (second_outputs(pruned, x) - wanted).abs().max().item() < 1e-4 * scale
    # the default ridge trades a little exactness for stability on correlated inputs
    damped = autoprune.prune(
        copy.deepcopy(model), x, {"first": 0.5}, importance=lowest_index_first, removed=(again := {})
    )
    reconstruct_layers(damped, model, grams, again)
    assert (second_outputs(damped, x) - wanted).abs().max().item() < plain_error / 10
    assert model.second.in_channels == 8  # the unpruned model is only read


def test_grouped_and_depthwise_layers_keep_their_pruned_weights(example):
    model = DepthwiseNet().eval()
    removed: dict = {}
    pruned = autoprune.prune(copy.deepcopy(model), example, {"depthwise.0": 0.5}, removed=removed)  # expand's outputs
    assert "depthwise.0" in removed and removed["project.0"]["in"]
    depthwise = pruned.depthwise[0].weight.detach().clone()
    refitted = reconstruct_layers(pruned, model, InputGrams(model, [(example, None)]), removed)
    assert refitted == ["project.0"]
    assert torch.equal(pruned.depthwise[0].weight, depthwise)


def test_a_layer_s_gram_matrix_does_not_depend_on_which_other_layers_were_asked_for(example):
    model = ConcatNet().eval()
    batches = [(torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(i)), None) for i in range(2)]
    together = InputGrams(model, batches)(["merge.0", "left.0"])
    alone = InputGrams(model, batches)(["merge.0"])
    assert torch.equal(together["merge.0"], alone["merge.0"])
    assert together["merge.0"].shape == (32 * 9 + 1, 32 * 9 + 1)


@pytest.mark.baseline("standard")
def test_a_trained_model_loses_less_accuracy_with_reconstruction_at_every_rate(baseline, digits):
    drops = {}
    for reconstruct in (False, True):
        settings = SearchSettings(
            max_accuracy_drop=100.0, calibration_batches=4, early_stop="off", reconstruct=reconstruct
        )
        evaluator = Evaluator.build(copy.deepcopy(baseline), digits, settings)
        for rate in (0.3, 0.5):
            plan = evaluator.space.uniform(rate, "l1")
            assert plan.reconstruct is reconstruct  # the study's setting, given by its space
            drops[reconstruct, rate] = evaluator.evaluate(plan)["accuracy_drop"]
    for rate in (0.3, 0.5):
        assert drops[True, rate] < drops[False, rate], drops
    assert drops[False, 0.5] - drops[True, 0.5] > 5, drops


@pytest.mark.baseline("standard")
def test_the_study_s_plans_record_reconstruction_and_the_best_model_replays_it(search_baseline, digits):
    options = {"max_accuracy_drop": 2.0, "seed": 0, "calibration_batches": 4, "uniform_starts": (0.4,)}
    result = search_baseline(trials=3, warm_start="uniform", **options)
    assert result.best_plan.reconstruct is True
    val = torch.utils.data.DataLoader(digits.val, batch_size=256)
    assert autoprune.metrics.accuracy(result.best_model, val) == pytest.approx(result.best_trial.user_attrs["accuracy"])
    off = search_baseline(trials=1, warm_start="uniform", reconstruct=False, **options)
    assert off.best_plan.reconstruct is False and "reconstruct" not in off.best_plan.to_dict()
    with pytest.raises(autoprune.AutopruneError, match="reconstruct must be true or false, got str 'yes'"):
        SearchSettings(max_accuracy_drop=1.0, reconstruct="yes")
