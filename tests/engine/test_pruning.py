from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import GroupedConcatNet, tiny_resnet
from torch import nn

import autoprune
from autoprune.errors import AutopruneError, PluginError, PruningError, UnknownNameError


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_output_shape_is_kept_and_size_falls_as_rate_rises(make_model, example):
    reference = make_model()(example).shape
    sizes = []
    for rate in (0.0, 0.25, 0.5, 0.75):
        model = autoprune.prune(make_model(), example, rate)
        assert model(example).shape == reference
        sizes.append(autoprune.measure(model, example))
    params = [s["params"] for s in sizes]
    flops = [s["flops"] for s in sizes]
    assert params == sorted(params, reverse=True) and len(set(params)) == 4
    assert flops == sorted(flops, reverse=True) and len(set(flops)) == 4


def test_prune_keeps_training_mode_and_leaves_untouched_groups_alone(example):
    model = tiny_resnet().train()
    autoprune.prune(model, example, 0.5)
    assert model.training


def test_per_group_rates_are_honoured(example):
    model = tiny_resnet()
    groups = autoprune.prunable_groups(model, example)
    target = next(g for g in groups if g.endswith("conv1") and g != "conv1")
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    autoprune.prune(model, example, {target: 0.5})
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {target}
    assert after[target] == before[target] // 2


def test_residual_groups_prune_every_coupled_layer_together(example):
    model = tiny_resnet()
    groups = autoprune.prunable_groups(model, example)
    assert "conv1" in groups  # the stem drives the whole first-stage residual stream
    autoprune.prune(model, example, {"conv1": 0.5})
    assert model.conv1.out_channels == 4
    for block in model.layer1:
        assert block.conv2.out_channels == 4 and block.conv1.in_channels == 4
    assert model.layer2[0].shortcut[0].in_channels == 4


def test_classifier_outputs_are_never_prunable_whatever_layer_it_is(example):
    from conftest import DepthwiseNet

    model = DepthwiseNet()
    skipped = autoprune.unprunable_groups(model, example)
    assert "head" in skipped and "outputs" in skipped["head"]
    assert "head" not in autoprune.prunable_groups(model, example)
    with pytest.raises(PruningError, match="'head'"):
        autoprune.prune(model, example, {"head": 0.5})


def test_unknown_group_name_suggests_close_ones(example):
    with pytest.raises(UnknownNameError, match="did you mean 'layer1.0.conv1'"):
        autoprune.prune(tiny_resnet(), example, {"layer1.0.conv": 0.5})


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.3", True])
def test_bad_rates_are_rejected(example, rate):
    with pytest.raises(AutopruneError, match="in \\[0, 1\\)"):
        autoprune.prune(tiny_resnet(), example, rate)


def test_callable_importance_is_called_once_per_group_with_a_channel_group(make_model, example):
    model = make_model()
    groups = autoprune.prunable_groups(model, example)
    seen = []

    def spy(group):
        seen.append(group)
        return torch.arange(group.num_channels, dtype=torch.float32)

    autoprune.prune(model, example, 0.5, importance=spy)
    assert sorted(g.name for g in seen) == sorted(groups)
    for group in seen:
        assert isinstance(group, autoprune.ChannelGroup)
        assert group.grads is None
        assert group.weights and len(group.weights) == len(group.layers)
        for w, layer in zip(group.weights, group.layers):
            assert w.shape[0] == group.num_channels
            assert layer.role in ("out", "in")
        assert group.layers[0].name == group.name and group.layers[0].role == "out"


def test_channel_group_rows_are_the_channels_weights(example):
    model = tiny_resnet()
    original = copy.deepcopy(model)
    captured = {}

    def capture(group):
        captured[group.name] = group
        return torch.ones(group.num_channels)

    autoprune.prune(model, example, {"layer1.0.conv1": 0.25}, importance=capture)
    group = captured["layer1.0.conv1"]
    conv1, conv2 = original.layer1[0].conv1, original.layer1[0].conv2
    by_layer = {(layer.name, layer.role): w for layer, w in zip(group.layers, group.weights)}
    assert torch.equal(by_layer[("layer1.0.conv1", "out")], conv1.weight)
    assert torch.equal(by_layer[("layer1.0.bn1", "out")].flatten(), original.layer1[0].bn1.weight)
    assert torch.equal(by_layer[("layer1.0.conv2", "in")], conv2.weight.transpose(0, 1))


def test_lowest_scores_are_removed(example):
    model = tiny_resnet()
    original = model.layer1[0].conv1.weight.detach().clone()
    autoprune.prune(
        model, example, {"layer1.0.conv1": 0.5}, importance=lambda g: -torch.arange(g.num_channels).double()
    )
    # scores fall with the index, so the first half of the channels survive
    assert torch.equal(model.layer1[0].conv1.weight, original[:4])


def test_per_group_importances_are_honoured(example):
    model = tiny_resnet()
    called = {"a": [], "b": []}

    def a(group):
        called["a"].append(group.name)
        return torch.ones(group.num_channels)

    def b(group):
        called["b"].append(group.name)
        return torch.ones(group.num_channels)

    autoprune.prune(model, example, 0.5, importance={"layer1.0.conv1": a, "layer2.0.conv1": b})
    assert called == {"a": ["layer1.0.conv1"], "b": ["layer2.0.conv1"]}


def test_per_group_importance_names_are_resolved_through_the_registry(example):
    model = tiny_resnet()
    with pytest.raises(UnknownNameError, match="did you mean 'fpgm'"):
        autoprune.prune(model, example, 0.5, importance={"layer1.0.conv1": "fpgn"})
    autoprune.prune(model, example, 0.5, importance={"layer1.0.conv1": "fpgm", "conv1": "random"})
    assert model.layer1[0].conv1.out_channels == 4


@pytest.mark.parametrize(
    ("scores", "fragment"),
    [
        (lambda g: torch.ones(g.num_channels + 1), "expected"),
        (lambda g: torch.ones(g.num_channels, 2), "expected"),
        (lambda g: torch.full((g.num_channels,), float("nan")), "non-finite"),
        (lambda g: [1.0] * g.num_channels, "torch.Tensor"),
        (lambda g: torch.arange(g.num_channels), "dtype torch.int64; scores must be floating point"),
    ],
)
def test_bad_importance_results_are_rejected_naming_the_importance(example, scores, fragment):
    def broken_metric(group):
        return scores(group)

    with pytest.raises(PluginError) as err:
        autoprune.prune(tiny_resnet(), example, 0.5, importance=broken_metric)
    assert "broken_metric" in str(err.value) and fragment in str(err.value)


def test_gradient_importance_without_calibration_is_a_clear_error(example):
    with pytest.raises(AutopruneError, match="'taylor' needs gradients; pass calibration"):
        autoprune.prune(tiny_resnet(), example, 0.5, importance="taylor")


def test_taylor_uses_calibration_gradients(example):
    model = tiny_resnet()
    reference = copy.deepcopy(model).eval()  # gradients are taken in eval mode
    targets = torch.tensor([1, 3])
    loss = F.cross_entropy(reference(example), targets)
    loss.backward()
    expected_grad = reference.layer1[0].conv1.weight.grad
    taylor = autoprune.get_importance("taylor").obj
    seen = {}

    def recording_taylor(group):
        seen[group.name] = group
        return taylor(group)

    recording_taylor.needs_grads = True
    autoprune.prune(
        model, example, {"layer1.0.conv1": 0.5}, importance=recording_taylor, calibration=[(example, targets)]
    )
    group = seen["layer1.0.conv1"]
    assert torch.allclose(group.grads[0], expected_grad, atol=1e-6)
    manual = sum(((w * g).flatten(1).sum(1)) for w, g in zip(group.weights, group.grads)).double() ** 2
    assert torch.allclose(taylor(group), manual)
    assert all(p.grad is None for p in model.parameters())  # calibration leaves no gradients behind

    # the same call through the registry name prunes the same channels
    by_name = autoprune.prune(
        copy.deepcopy(reference),
        example,
        {"layer1.0.conv1": 0.5},
        importance="taylor",
        calibration=[(example, targets)],
    )
    assert torch.equal(by_name.layer1[0].conv1.weight, model.layer1[0].conv1.weight)


def test_grouped_conv_fed_by_concat_is_left_unpruned_and_reported():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    skipped = autoprune.unprunable_groups(GroupedConcatNet(), x)
    assert any("grouped convolution grouped consumes a concatenation" in why for why in skipped.values())
    for importance in ("l1", "random", "fpgm"):
        for seed in range(3):
            torch.manual_seed(seed)
            model = GroupedConcatNet().eval()
            autoprune.prune(model, x, 0.5, importance=importance)
            assert model(x).shape == (2, 5)
            assert model.c.out_channels == 6


def test_grouped_convolutions_are_pruned_evenly_per_group():
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 1)
            self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(self.g(self.a(x)).mean((2, 3)))

    x = torch.randn(1, 3, 8, 8)
    model = autoprune.prune(Grouped(), x, 0.5)
    assert model.g.groups == 4 and model.g.in_channels == 8 and model(x).shape == (1, 2)


def test_builtin_importances_all_prune(example):
    for name in autoprune.list_importances():
        model = tiny_resnet()
        calibration = [(example, torch.tensor([0, 1]))]
        autoprune.prune(model, example, 0.5, importance=name, calibration=calibration)
        assert model(example).shape == (2, 5)
        assert model.layer1[0].conv1.out_channels == 4, name


def test_round_to_leaves_every_pruned_groups_channel_count_divisible_on_a_torchvision_model():
    from autoprune.engine import group_sizes, removal_count

    model = autoprune.create_model("torchvision/resnet18", num_classes=10, in_channels=3).eval()
    x = torch.randn(1, 3, 32, 32)
    before = group_sizes(model, x)
    rates = {g: 0.1 + 0.05 * (i % 9) for i, g in enumerate(autoprune.prunable_groups(model, x))}
    pruned = autoprune.prune(copy.deepcopy(model), x, rates, round_to=8)
    after = group_sizes(pruned, x)
    assert pruned(x).shape == (1, 10)
    for group, rate in rates.items():
        channels = after[group][0]
        assert channels % 8 == 0, (group, channels)
        assert (
            before[group][0] - int(rate * before[group][0])
            <= channels
            < before[group][0] - int(rate * before[group][0]) + 8
        )
    unrounded = group_sizes(autoprune.prune(copy.deepcopy(model), x, rates), x)
    assert any(unrounded[g][0] % 8 for g in rates)  # the rates alone would not have given multiples of 8
    assert removal_count(10, 0.5, 1, 16) == 0  # narrower than round_to: kept whole
    assert removal_count(48, 0.3, 1, 16) == 0  # 34 kept, rounded up to 48
    assert removal_count(48, 0.4, 1, 16) == 16  # 29 kept, rounded up to 32
    assert removal_count(48, 0.4, 4, 8) == 18  # 4 blocks of 30 kept: 120 in all, a multiple of 8
