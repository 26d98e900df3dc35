"""Network slimming: the BatchNorm scale (gamma) of each channel.

Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017. Channels whose BatchNorm scale is small contribute little
after normalization.
"""

from __future__ import annotations

import torch
from torch import nn

import autoprune
from autoprune_plugins.importance_magnitude import l2


def bn_scale(group: autoprune.ChannelGroup) -> torch.Tensor:
    """Sum of ``|gamma|`` over the group's BatchNorm layers.

    A group without a BatchNorm layer has no scale to read; it falls back to
    the group L2 norm of its weights (importance ``l2``).
    """
    gammas = [
        w.flatten().double().abs()
        for w, layer in zip(group.weights, group.layers)
        if isinstance(layer.module, nn.modules.batchnorm._BatchNorm)
    ]
    if not gammas:
        return l2(group)
    return torch.stack(gammas).sum(0)


@autoprune.hookimpl
def autoprune_register_importances(register):
    register("bn_scale", bn_scale, description="BatchNorm scale factors (Liu et al., ICCV 2017)")
