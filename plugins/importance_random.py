"""Random importance: the baseline every criterion must beat.

Used as a control in, e.g., Liu et al., "Rethinking the Value of Network
Pruning", ICLR 2019 and Blalock et al., "What is the State of Neural Network
Pruning?", MLSys 2020. Scores are pseudo-random but deterministic: the same
group (name and size) always gets the same scores.
"""

from __future__ import annotations

import zlib

import torch

import autoprune


def random(group: autoprune.ChannelGroup) -> torch.Tensor:
    """Uniform random scores, seeded by the group's name and size."""
    seed = zlib.crc32(f"{group.name}:{group.num_channels}".encode())
    return torch.rand(group.num_channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@autoprune.hookimpl
def autoprune_register_importances(register):
    register("random", random, description="random scores, deterministic per group (control baseline)")
