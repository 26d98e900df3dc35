"""An example autoprune plugin: the ``max_abs`` importance and the ``example_cnn`` model."""

from __future__ import annotations

import torch
from torch import nn

import autoprune


def max_abs(group: autoprune.ChannelGroup) -> torch.Tensor:
    """The largest absolute weight of each channel, summed over the group's layers.

    A magnitude criterion in the family of Li et al., "Pruning Filters for
    Efficient ConvNets", ICLR 2017, with the L-infinity norm in place of L1.
    """
    return torch.stack([w.flatten(1).abs().amax(1).double() for w in group.weights]).sum(0)


def example_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    """Two convolution blocks and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


@autoprune.hookimpl
def autoprune_register_importances(register):
    register("max_abs", max_abs, description="largest absolute weight per channel")


@autoprune.hookimpl
def autoprune_register_models(register):
    register("example_cnn", example_cnn, description="two conv blocks, for small images")
