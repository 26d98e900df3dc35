"""Weight importances: which single weights weight pruning and N:M sparsity keep.

Each scores every weight of a Conv or Linear layer (a tensor of the weight's
shape; higher means keep). The study setting ``weight_importance`` picks one.
"""

from __future__ import annotations

import torch

import autoprune


def magnitude(weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """Absolute value of each weight.

    Han et al., "Learning both Weights and Connections for Efficient Neural
    Networks", NeurIPS 2015; also the criterion of NVIDIA's ASP for 2:4 sparsity
    (Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021).
    """
    return weight.detach().abs()


def snip(weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """Connection sensitivity ``|w * dL/dw|``: the first-order change of the loss when a weight is removed.

    Lee et al., "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", ICLR 2019; the first-order Taylor term of Molchanov et al.,
    "Importance Estimation for Neural Network Pruning", CVPR 2019, per weight.
    """
    return (weight.detach() * grad).abs()


@autoprune.hookimpl
def autoprune_register_weight_importances(register):
    register("magnitude", magnitude, description="absolute value of each weight (Han et al., NeurIPS 2015)")
    register(
        "snip", snip, needs_grads=True, description="|weight x loss gradient| per weight (Lee et al., SNIP, ICLR 2019)"
    )
