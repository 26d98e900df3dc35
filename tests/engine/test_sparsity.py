"""Weight sparsity masks: unstructured and N:M, kept through fine-tuning, export and reload."""

from __future__ import annotations

import onnx
import pytest
import torch
from conftest import tiny_resnet
from onnx import numpy_helper

from autoprune.engine.sparsity import (
    make_permanent,
    maskable_layers,
    n_m_violations,
    prune_n_m,
    prune_weights,
    sparsity_stats,
)
from autoprune.errors import PruningError


def test_unstructured_masks_reach_the_planned_sparsity_within_one_weight_per_layer(example):
    torch.manual_seed(0)
    model = tiny_resnet()
    plan = {name: 0.3 + 0.05 * (i % 5) for i, name in enumerate(maskable_layers(model))}
    prune_weights(model, plan)
    for name, layer in maskable_layers(model).items():
        zeros = int((layer.weight == 0).sum())
        assert abs(zeros - plan[name] * layer.weight.numel()) <= 1, name
        assert (
            int((layer.weight[layer.weight != 0].abs() < layer.weight_orig[layer.weight == 0].abs().max()).sum()) == 0
        )
    stats = sparsity_stats(model)
    total = sum(layer.weight.numel() for layer in maskable_layers(model).values())
    assert stats["sparsity"] == pytest.approx(
        sum(plan[n] * m.weight.numel() for n, m in maskable_layers(model).items()) / total, abs=len(plan) / total
    )
    dense = sparsity_stats(tiny_resnet())
    assert stats["nonzero_params"] < dense["nonzero_params"] and stats["size_bytes"] < dense["size_bytes"]


def test_masks_keep_their_zeros_through_fine_tuning_and_become_plain_weights(example):
    torch.manual_seed(0)
    model = tiny_resnet()
    prune_weights(model, 0.5)
    zeros = {n: (m.weight == 0) for n, m in maskable_layers(model).items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(example).sum().backward()
        optimizer.step()
    make_permanent(model)
    for name, layer in maskable_layers(model).items():
        assert not hasattr(layer, "weight_mask") and isinstance(layer.weight, torch.nn.Parameter)
        assert bool((layer.weight[zeros[name]] == 0).all()), name


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter, as autoprune export uses
def test_every_2_4_block_keeps_at_most_2_nonzeros_also_after_export_and_reload(example, tmp_path):
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    skipped = prune_n_m(model, 2, 4)
    assert skipped == ["conv1"]  # 3 input channels: not a multiple of 4, left dense
    assert n_m_violations(model) == {}
    make_permanent(model)
    assert sparsity_stats(model)["sparsity"] > 0.45
    torch.save(model.state_dict(), tmp_path / "m.pt")
    reloaded = tiny_resnet()
    reloaded.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert n_m_violations(reloaded) == {}
    torch.onnx.export(reloaded.eval(), (example,), str(tmp_path / "m.onnx"), dynamo=False)
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer]
    convs = [torch.from_numpy(w.copy()) for w in weights if w.ndim == 4 and w.shape[1] % 4 == 0]
    assert convs, "the ONNX file holds the convolutions' weights"
    for weight in convs:  # BatchNorm may be folded in: a per-output-channel scale keeps every zero
        blocks = weight.movedim(1, -1).reshape(-1, 4)
        assert int(((blocks != 0).sum(1) > 2).sum()) == 0


def test_bad_sparsity_requests_are_errors(example):
    model = tiny_resnet()
    with pytest.raises(PruningError, match="no Conv or Linear layer named 'nope'"):
        prune_weights(model, {"nope": 0.5})
    with pytest.raises(PruningError, match=r"must be in \[0, 1\), got 1.0"):
        prune_weights(model, 1.0)
    with pytest.raises(PruningError, match="0 < N < M, got 4:4"):
        prune_n_m(model, 4, 4)


def test_scores_decide_which_weights_go_and_masked_weights_go_first(example):
    torch.manual_seed(0)
    model = tiny_resnet()
    layers = maskable_layers(model)
    inverse = {name: -layer.weight.detach().abs() for name, layer in layers.items()}  # keep the smallest
    prune_weights(model, 0.5, inverse)
    for name, layer in layers.items():
        kept, gone = layer.weight_orig[layer.weight != 0].abs(), layer.weight_orig[layer.weight == 0].abs()
        assert kept.max() <= gone.min(), name
    before = {name: layer.weight == 0 for name, layer in layers.items()}
    prune_weights(model, 0.75, {name: torch.rand(layer.weight.shape) for name, layer in layers.items()})
    for name, layer in layers.items():  # a second, larger sparsity keeps every earlier zero
        assert bool((layer.weight[before[name]] == 0).all()), name
        assert abs(int((layer.weight == 0).sum()) - 0.75 * layer.weight.numel()) <= 1, name
    with pytest.raises(PruningError, match=r"scores of layer '.*' have shape \(3,\); expected the weight's"):
        prune_weights(tiny_resnet(), 0.5, dict.fromkeys(maskable_layers(tiny_resnet()), torch.ones(3)))


def test_weight_importances_are_checked_and_snip_uses_loss_gradients(example):
    from autoprune.engine import weight_scores
    from autoprune.errors import AutopruneError, PluginError

    torch.manual_seed(0)
    model = tiny_resnet().eval()
    layers = list(maskable_layers(model))
    calibration = [(example, torch.tensor([0, 1]))]
    with pytest.raises(AutopruneError, match="'snip' needs gradients; pass calibration batches"):
        weight_scores(model, layers, "snip")
    snip = weight_scores(model, layers, "snip", calibration)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(example), torch.tensor([0, 1])).backward()
    for name, layer in maskable_layers(model).items():
        assert torch.allclose(snip[name], (layer.weight * layer.weight.grad).abs().double()), name
    assert not torch.equal(snip[layers[0]], weight_scores(model, layers[:1], "magnitude")[layers[0]])

    def flat(weight, grad):
        return weight.flatten()

    with pytest.raises(
        PluginError,
        match=r"weight importance '.*flat' on layer 'conv1' returned shape \(\d+,\); "
        "expected the weight's",
    ):
        weight_scores(model, layers, flat)
    with pytest.raises(PluginError, match=r"returned 1 non-finite score"):
        weight_scores(
            model, layers[:1], lambda w, g: w.flatten().index_fill(0, torch.tensor([0]), float("nan")).reshape(w.shape)
        )
