"""The search benchmark's second architecture (benchmarks/bench_models.py): a plugin module, loaded as
`autoprune --plugin` loads one, whose MobileNetV2-style network builds for Fashion-MNIST and prunes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import autoprune
from autoprune import plugins
from autoprune.baseline import build_model
from autoprune.data import DataSplits
from autoprune.settings import load_study_file

ROOT = Path(__file__).parent.parent
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
try:
    import bench_models
finally:
    sys.path.remove(str(BENCHMARKS))

NAME = "bench_mobilenet_v2"


@pytest.fixture
def registered():
    """The plugin module registered through the `--plugin` path for one test, unregistered after."""
    name = plugins.load_plugin_module("bench_models")
    yield name
    plugins.unregister(name=name)


def depthwise(model: nn.Module) -> list[nn.Conv2d]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels
    ]


def test_the_module_registers_the_network_as_a_plugin_and_unregisters_it(registered):
    assert registered == "bench_models"
    entry = autoprune.get_registries().models.get(NAME)
    assert entry.source.plugin == "bench_models"  # a plugin module of its own, not a built-in
    assert "Sandler" in entry.description
    plugins.unregister(name=registered)
    try:
        assert NAME not in autoprune.list_models()
    finally:
        plugins.load_plugin_module("bench_models")  # for the fixture to unregister


def test_it_builds_for_28x28_one_channel_images_and_10_classes(registered):
    torch.manual_seed(0)
    model = autoprune.create_model(NAME, num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    assert model.features[0][0].in_channels == 1 and model.features[0][0].stride == (1, 1)  # CIFAR-style stem
    assert model.features(x).shape[-2:] == (4, 4)  # strides 2, 2, 2 over 28x28
    measured = autoprune.measure(model, x[:1])
    assert round(measured["flops"] / 1e6, 1) == 23.1 and measured["params"] == 389_130  # as its docstring says


def test_its_blocks_are_inverted_residuals_with_depthwise_convolutions(registered):
    torch.manual_seed(0)
    model = autoprune.create_model(NAME, num_classes=10, in_channels=1).eval()
    blocks = [m for m in model.modules() if isinstance(m, bench_models.InvertedResidual)]
    assert len(blocks) == sum(n for _, _, n, _ in bench_models.STAGES) == 10
    assert len(depthwise(model)) == len(blocks)  # one 3x3 depthwise convolution per block
    expanding = [b for b in blocks if len(b.conv) == 3]
    for block in expanding:
        expand, dw, project = (seq[0] for seq in block.conv)
        assert expand.kernel_size == project.kernel_size == (1, 1) and dw.kernel_size == (3, 3)
        assert dw.groups == dw.in_channels == expand.out_channels == 6 * expand.in_channels  # expanded, not narrowed
        assert project.out_channels < dw.out_channels
        assert not any(isinstance(m, nn.ReLU6) for m in block.conv[-1])  # the linear bottleneck
    residual = [b for b in blocks if b.residual]
    assert len(residual) == 5  # the second and later blocks of each stage
    x = torch.randn(1, 16, 14, 14)
    block = bench_models.InvertedResidual(16, 16, 1, 6).eval()
    with torch.no_grad():
        assert torch.allclose(block(x) - block.conv(x), x)  # the input added back
        assert not bench_models.InvertedResidual(16, 16, 2, 6).residual  # not across a stride
        assert not bench_models.InvertedResidual(16, 24, 1, 6).residual  # nor across a change of channels


def test_the_width_multiplier_scales_every_layer_in_multiples_of_8(registered):
    x = torch.randn(1, 1, 28, 28)
    narrow = autoprune.create_model(NAME, num_classes=10, in_channels=1, width=0.5)
    wide = autoprune.create_model(NAME, num_classes=10, in_channels=1, width=1.0)
    assert autoprune.count_flops(narrow, x) < 0.5 * autoprune.count_flops(wide, x)
    convs = [m for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.out_channels % 8 == 0 for m in convs)
    assert convs[0].out_channels == 16  # a 32-channel stem at half width
    with pytest.raises(autoprune.AutopruneError, match="width must be a number above 0, got 0"):
        autoprune.create_model(NAME, num_classes=10, in_channels=1, width=0)


def test_one_uniform_rate_of_0_3_cuts_its_flops_and_keeps_its_outputs(registered):
    torch.manual_seed(0)
    model = autoprune.create_model(NAME, num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 28, 28)
    before, widths = autoprune.measure(model, x[:1]), [m.out_channels for m in depthwise(model)]
    autoprune.prune(model, x, 0.3)
    after = autoprune.measure(model, x[:1])
    assert before["flops"] / after["flops"] > 1.3
    assert after["params"] < before["params"]
    assert model(x).shape == (2, 10)
    pruned = [m.out_channels for m in depthwise(model)]  # every one still depthwise, and narrower
    assert len(pruned) == len(widths) and all(p < w for p, w in zip(pruned, widths, strict=True))


def test_the_study_file_mirrors_the_resnet_benchmark_and_builds_its_model(registered):
    mobile = load_study_file(ROOT / "studies" / "bench-fashion-mnist-mobilenet.toml")
    resnet = load_study_file(ROOT / "studies" / "bench-fashion-mnist.toml")
    assert (mobile.model, mobile.dataset) == (NAME, "fashion_mnist") == (NAME, resnet.dataset)
    assert mobile.name != resnet.name and mobile.out_dir != resnet.out_dir
    same = ("max_accuracy_drop", "trials", "seed", "importances")
    assert {k: getattr(mobile.settings, k) for k in same} == {k: getattr(resnet.settings, k) for k in same}
    assert (mobile.train.epochs, mobile.train.batch_size, mobile.train.lr) == (10, 128, 0.1)
    images = torch.utils.data.TensorDataset(torch.randn(4, 1, 28, 28), torch.arange(4))
    data = DataSplits(train=images, val=images, test=None, num_classes=10, input_shape=(1, 28, 28))
    model = build_model(mobile, data)  # the study's own path from the registry to a checked model
    assert isinstance(model, bench_models.MobileNetV2) and model.classifier.out_features == 10
