"""Elastic pruning's masks: zeroed channels compute what the cut model computes, and keep their gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autoprune.engine import group_sizes, prune
from autoprune.engine.elastic import ChannelMasks


def with_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their initial values, so zeroing must handle them."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=generator) * 0.2 + 1)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.2)
    return model.eval()


def test_zeroed_channels_compute_what_the_cut_model_computes(make_model, example):
    model = with_batchnorm_statistics(make_model())
    masks = ChannelMasks(model, example, 0.5, "l1")
    before = model(example)
    selected = masks.select(1.0)
    assert any(selected.values())
    zeroed = model(example)
    widths = masks.widths()
    cut = masks.cut()
    assert torch.allclose(cut(example), zeroed, atol=1e-5)
    assert not torch.allclose(zeroed, before, atol=1e-3)  # the zeroed channels did change the output
    hard = prune(copy.deepcopy(make_model()), example, 0.5, "l1")
    assert {n: c for n, (c, _) in group_sizes(cut, example).items()} == {
        n: c for n, (c, _) in group_sizes(hard, example).items()
    }
    assert all(widths[n] == c for n, (c, _) in group_sizes(cut, example).items() if n in widths)


def test_a_fraction_zeroes_that_share_of_each_group(example):
    from tests.conftest import DepthwiseNet

    model = DepthwiseNet().eval()
    masks = ChannelMasks(model, example, {"depthwise.0": 0.5, "project.0": 0.5}, "l1")  # 48 and 16 channels
    assert {n: len(i) for n, i in masks.select(0.5).items()} == {"depthwise.0": 12, "project.0": 4}
    assert {n: len(i) for n, i in masks.select(1.0).items()} == {"depthwise.0": 24, "project.0": 8}


def test_a_zeroed_channel_keeps_computing_and_its_readers_grow_back(example):
    """The weights that read a zeroed channel get gradients, so training brings it back; reapply zeroes them
    again. The channel's own filters are left as they were (zeroed, a BatchNorm would make them explode)."""
    from tests.conftest import DepthwiseNet

    torch.manual_seed(0)
    model = with_batchnorm_statistics(DepthwiseNet())
    masks = ChannelMasks(model, example, {"depthwise.0": 0.5}, "l1")  # the expansion's channels
    expand, project = model.expand[0], model.project[0]
    filters = expand.weight.detach().clone()
    zeroed = masks.select(1.0)["depthwise.0"]
    assert torch.equal(expand.weight, filters)
    assert project.weight[:, zeroed].abs().sum() == 0 and project.weight.abs().sum() > 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(example), torch.tensor([0, 1])).backward()
        optimizer.step()
    regrown = project.weight[:, zeroed].abs().amax()
    assert 0 < regrown < project.weight.abs().amax()
    masks.reapply()
    assert project.weight[:, zeroed].abs().sum() == 0


def test_no_rate_zeroes_nothing_and_cuts_nothing(example):
    from tests.conftest import ConcatNet

    model = ConcatNet().eval()
    state = copy.deepcopy(model.state_dict())
    masks = ChannelMasks(model, example, 0.0)
    assert masks.select(1.0) == {}
    assert masks.cut() is model
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("round_to", [1, 4])
def test_the_cut_rounds_as_prune_rounds(example, round_to):
    from tests.conftest import ConcatNet

    torch.manual_seed(0)
    model = ConcatNet().eval()
    masks = ChannelMasks(model, example, 0.3, "fpgm", round_to=round_to)
    masks.select(1.0)
    cut = masks.cut()
    hard = prune(ConcatNet().eval(), example, 0.3, "fpgm", round_to=round_to)
    assert [p.shape for p in cut.parameters()] == [p.shape for p in hard.parameters()]
