"""Cheap recovery of a pruned model before it is evaluated.

BatchNorm recalibration: after channels are removed, the running statistics of
the remaining BatchNorm layers no longer match their inputs. Re-estimating them
on a few training batches, with no weight update, makes accuracy right after
pruning a reliable signal for ranking candidates (Li et al., "EagleEye: Fast
Sub-net Evaluation for Efficient Neural Network Pruning", ECCV 2020).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .inputs import call_network, move_to


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """Re-estimate every BatchNorm layer's running mean and variance on ``batches``.

    The statistics are the plain average over the batches (momentum ``None``),
    so the result depends only on the batches, not on the old statistics. The
    model is left in eval mode; its weights are not changed.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    device = next(model.parameters()).device
    model.train()
    with torch.no_grad():
        for inputs, _ in batches:  # the network alone: a detector in training mode would ask for targets
            call_network(model, move_to(inputs, device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()
