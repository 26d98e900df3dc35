"""Magnitude importances: the L1 and L2 norms of each channel's weights.

Scores are taken over every coupled parameter of the group (the group-level
norms of Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023),
not only the layer that produces the channel.
"""

from __future__ import annotations

import torch

import autoprune


def _total(group: autoprune.ChannelGroup, per_row) -> torch.Tensor:
    if not group.weights:
        return torch.zeros(group.num_channels)
    return torch.stack([per_row(w.flatten(1).double()) for w in group.weights]).sum(0)


def l1(group: autoprune.ChannelGroup) -> torch.Tensor:
    """Sum of absolute weights per channel.

    Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (filter
    L1 norm), extended to all coupled layers of the group.
    """
    return _total(group, lambda w: w.abs().sum(1))


def l2(group: autoprune.ChannelGroup) -> torch.Tensor:
    """Euclidean norm of each channel's weights across the whole group.

    He et al., "Soft Filter Pruning for Accelerating Deep Convolutional Neural
    Networks", IJCAI 2018 (filter L2 norm); group norm as in DepGraph (CVPR 2023).
    """
    return _total(group, lambda w: w.pow(2).sum(1)).sqrt()


@autoprune.hookimpl
def autoprune_register_importances(register):
    register("l1", l1, description="L1 norm of each channel's weights (Li et al., ICLR 2017)")
    register("l2", l2, description="L2 norm of each channel's weights over the group (He et al., IJCAI 2018)")
