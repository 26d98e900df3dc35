"""FPGM: prune the channels closest to the geometric median of their layer.

He et al., "Filter Pruning via Geometric Median for Deep Convolutional Neural
Networks Acceleration", CVPR 2019. A channel whose weights lie near the
geometric median of all channels is the most replaceable by the others, so its
score, the summed distance to every other channel, is low.
"""

from __future__ import annotations

import torch

import autoprune


def fpgm(group: autoprune.ChannelGroup) -> torch.Tensor:
    """Sum of Euclidean distances from each channel to all others, per coupled layer.

    Each layer's distances are divided by their mean so that no layer
    dominates by scale alone, then summed over the group's layers.
    """
    scores = torch.zeros(group.num_channels, dtype=torch.float64)
    for w in group.weights:
        rows = w.flatten(1).double()
        if rows.shape[1] < 2:  # a normalization scale: one number per channel, no geometry
            continue
        dist = torch.cdist(rows, rows).sum(1)
        mean = dist.mean()
        if mean > 0:
            scores += dist / mean
    return scores


@autoprune.hookimpl
def autoprune_register_importances(register):
    register("fpgm", fpgm, description="distance to the geometric median (He et al., CVPR 2019)")
