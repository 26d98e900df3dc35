"""An example autoprune plugin: the ``max_abs`` importance, the ``example_cnn`` model and the ``road_iou`` task."""

from __future__ import annotations

import torch
from torch import nn

import autoprune
from autoprune.tasks import Segmentation


def max_abs(group: autoprune.ChannelGroup) -> torch.Tensor:
    """The largest absolute weight of each channel, summed over the group's layers.

    A magnitude criterion in the family of Li et al., "Pruning Filters for
    Efficient ConvNets", ICLR 2017, with the L-infinity norm in place of L1.
    """
    return torch.stack([w.flatten(1).abs().amax(1).double() for w in group.weights]).sum(0)


def example_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    """Two convolution blocks and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


class RoadIoU(Segmentation):
    """Segmentation scored by the intersection over union of one class: the road (label 1)."""

    name = "road_iou"
    metric = "road_iou"
    ROAD = 1

    def scores(self, model, batches):
        intersection = union = 0
        with torch.inference_mode():
            was_training = model.training
            model.eval()
            for inputs, labels in batches:
                road = self.predict(model, inputs)["out"].argmax(1) == self.ROAD
                truth = labels == self.ROAD
                intersection += int((road & truth).sum())
                union += int((road | truth).sum())
            model.train(was_training)
        return {"road_iou": 100.0 * intersection / union if union else 100.0}


@autoprune.hookimpl
def autoprune_register_importances(register):
    register("max_abs", max_abs, description="largest absolute weight per channel")


@autoprune.hookimpl
def autoprune_register_models(register):
    register("example_cnn", example_cnn, description="two conv blocks, for small images")


@autoprune.hookimpl
def autoprune_register_tasks(register):
    register("road_iou", RoadIoU, description="IoU of the road class (points)")
