"""First-order Taylor importance from calibration gradients.

Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019:
the loss change from removing a channel is approximated by
``(sum_s g_s * w_s) ** 2`` over every parameter ``s`` of the channel, with the
gradients ``g`` accumulated over a few calibration batches.
"""

from __future__ import annotations

import torch

import autoprune


def taylor(group: autoprune.ChannelGroup) -> torch.Tensor:
    """Squared first-order Taylor estimate of the loss change, summed over the group."""
    if group.grads is None:
        raise autoprune.PluginError("importance 'taylor' was called without gradients")
    total = torch.zeros(group.num_channels, dtype=torch.float64)
    for w, g in zip(group.weights, group.grads):
        total += (w.flatten(1).double() * g.flatten(1).double()).sum(1)
    return total.pow(2)


@autoprune.hookimpl
def autoprune_register_importances(register):
    register(
        "taylor",
        taylor,
        needs_grads=True,
        description="first-order Taylor expansion of the loss (Molchanov et al., CVPR 2019)",
    )
