"""torchvision's detectors and segmenters prune with their outputs' structure and class count unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import autoprune
from autoprune.engine import output_shapes

DETECTORS = [
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
]
SEGMENTERS = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50"]
OUTPUT_LAYERS = {  # the layers whose width is the class count or the box coordinates
    "ssdlite320_mobilenet_v3_large": [
        "head.classification_head.module_list.0.1",
        "head.regression_head.module_list.5.1",
    ],
    "fasterrcnn_mobilenet_v3_large_320_fpn": [
        "rpn.head.cls_logits",
        "rpn.head.bbox_pred",
        "roi_heads.box_predictor.cls_score",
        "roi_heads.box_predictor.bbox_pred",
    ],
    "retinanet_resnet50_fpn": ["head.classification_head.cls_logits", "head.regression_head.bbox_reg"],
    "fcos_resnet50_fpn": [
        "head.classification_head.cls_logits",
        "head.regression_head.bbox_reg",
        "head.regression_head.bbox_ctrness",
    ],
    "lraspp_mobilenet_v3_large": ["classifier.low_classifier", "classifier.high_classifier"],
    "deeplabv3_mobilenet_v3_large": ["classifier.4"],
    "fcn_resnet50": ["classifier.4"],
}


def _widths(model: nn.Module, names: list[str]) -> dict[str, int]:
    modules = dict(model.named_modules())
    return {n: modules[n].out_channels if isinstance(modules[n], nn.Conv2d) else modules[n].out_features for n in names}


@pytest.mark.parametrize("name", DETECTORS)
def test_a_detector_prunes_at_rate_0_3_and_still_detects_its_classes(name):
    torch.manual_seed(0)
    model = autoprune.create_model(f"torchvision/{name}", num_classes=4, in_channels=3, min_size=64, max_size=64).eval()
    x = ([torch.rand(3, 64, 96)],)
    groups = autoprune.prunable_groups(model, x)
    assert not set(OUTPUT_LAYERS[name]) & set(groups)
    pruned = autoprune.prune(copy.deepcopy(model), x, 0.3)
    assert output_shapes(pruned, x) == output_shapes(model, x)  # every head map: class and box widths kept
    assert _widths(pruned, OUTPUT_LAYERS[name]) == _widths(model, OUTPUT_LAYERS[name])
    before, after = autoprune.measure(model, x), autoprune.measure(pruned, x)
    assert after["flops"] < 0.75 * before["flops"] and after["params"] < 0.75 * before["params"]
    with torch.no_grad():
        detections = pruned(*x)  # the full model: post-processing included
    assert len(detections) == 1 and {"boxes", "scores", "labels"} <= set(detections[0])
    assert detections[0]["boxes"].shape[1:] == (4,)
    assert ((detections[0]["labels"] >= 0) & (detections[0]["labels"] < 4)).all()


@pytest.mark.parametrize("name", SEGMENTERS)
def test_a_segmenter_prunes_at_rate_0_3_and_keeps_one_map_per_class(name):
    torch.manual_seed(0)
    model = autoprune.create_model(f"torchvision/{name}", num_classes=6, in_channels=3).eval()
    x = torch.rand(1, 3, 64, 96)
    pruned = autoprune.prune(copy.deepcopy(model), x, 0.3)
    with torch.no_grad():
        out = pruned(x)
    assert list(out) == ["out"] and out["out"].shape == (1, 6, 64, 96)
    assert _widths(pruned, OUTPUT_LAYERS[name]) == _widths(model, OUTPUT_LAYERS[name])
    assert autoprune.measure(pruned, x)["flops"] < 0.75 * autoprune.measure(model, x)["flops"]


class FrozenNet(nn.Module):
    """A backbone as torchvision's pretrained detectors build it: FrozenBatchNorm2d and frozen parameters."""

    def __init__(self) -> None:
        from torchvision.ops.misc import FrozenBatchNorm2d

        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = FrozenBatchNorm2d(16)
        self.head = nn.Conv2d(16, 5, 1)
        with torch.no_grad():
            self.norm.running_mean.copy_(torch.arange(16.0))
        self.conv.requires_grad_(False)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))))


def test_frozen_batchnorm_and_frozen_parameters_are_pruned_with_their_channels(example):
    model = FrozenNet()
    autoprune.prune(model, example, {"conv": 0.5}, importance=lambda g: torch.arange(g.num_channels, dtype=torch.float))
    assert model.conv.out_channels == 8 and model.norm.running_mean.tolist() == list(map(float, range(8, 16)))
    assert model(example).shape == (2, 5, 16, 16)
    assert not model.conv.weight.requires_grad and model.head.weight.requires_grad  # as they were


def test_detection_builders_refuse_what_they_cannot_build():
    with pytest.raises(autoprune.AutopruneError, match="takes RGB images"):
        autoprune.create_model("torchvision/fcos_resnet50_fpn", num_classes=4, in_channels=1)
    with pytest.raises(autoprune.AutopruneError, match="has 91 classes, got num_classes=4; use weights_backbone"):
        autoprune.create_model("torchvision/fcos_resnet50_fpn", num_classes=4, in_channels=3, weights="DEFAULT")
    with pytest.raises(autoprune.AutopruneError, match="does not resize its inputs"):
        autoprune.create_model("torchvision/fcn_resnet50", num_classes=6, in_channels=3, min_size=64)
