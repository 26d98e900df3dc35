"""What an importance receives: a group of coupled channels and the layers they live in.

These two classes are part of the plugin contract (``autoprune_register_importances``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CoupledLayer:
    """One layer (or bare parameter) whose channels move with a group.

    ``role`` is ``"out"`` when the group's channels are the layer's outputs and
    ``"in"`` when they are its inputs (normalization layers, depthwise
    convolutions and bare parameters are ``"out"``).
    """

    name: str
    module: nn.Module | nn.Parameter
    role: str


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Coupled channels that are pruned together, as an importance sees them.

    ``weights[i]`` is the parameter of ``layers[i]`` viewed with the group's
    channel dimension first, so ``w.flatten(1)`` has one row per channel (for a
    layer fed through a flatten, a channel's row holds all its features).
    ``grads`` has the same layout, holding loss gradients accumulated over the
    calibration batches, when the importance was registered with
    ``needs_grads=True``; otherwise it is None. The tensors are copies: changing
    them does not change the model.
    """

    name: str
    num_channels: int
    weights: list[torch.Tensor]
    grads: list[torch.Tensor] | None
    layers: list[CoupledLayer]
