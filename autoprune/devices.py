"""Where a study computes: ``study.device`` (``--device``) resolved to a torch device, checked to exist.

``auto`` takes the first CUDA device when torch sees one, else the CPU; ``cuda`` and
``cuda:N`` must name a device this machine has. Baseline training, every trial (pruning,
recalibration, reconstruction, evaluation, metrics), the references, the sensitivity
curves and the finalists run where the baseline model is, so a study moves its
baseline there once. Latency is timed where ``study.latency_device`` says.
"""

from __future__ import annotations

import re

import torch

from .errors import AutopruneError

#: What ``study.device`` accepts, in words (and as the settings rule quotes it).
DEVICE_RULE = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def is_device_name(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) is not None


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` (a ``study.device`` value) names on this machine; a CUDA device this machine
    does not have is a one-line error."""
    if not is_device_name(name):
        raise AutopruneError(f"device must be {DEVICE_RULE}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AutopruneError(f"device {name!r} but torch sees no CUDA device on this machine; use 'cpu' or 'auto'")
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise AutopruneError(
            f"device {name!r} but this machine has {count} CUDA device{'' if count == 1 else 's'} "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return device
