"""Files of weights: written atomically, read with ``weights_only=True`` by one function.

A checkpoint is a ``state_dict``, or a dict holding one under ``"state_dict"``
(what autoprune's baseline cache writes). A crash never leaves a half-written
file that a later run would trust, and loading never unpickles arbitrary
objects: ``torch.load(..., weights_only=True)`` only.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import AutopruneError
from .files import atomic_write
from .provenance import fingerprint, note


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state_dict in ``path``, read with ``weights_only=True``; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise AutopruneError(f"{what} {str(path)!r} does not exist")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # torch names the class it refused to build
            raise AutopruneError(f"{what} {str(path)!r} is not a PyTorch checkpoint (unreadable pickle)") from None
        raise AutopruneError(
            f"{what} {str(path)!r} holds Python objects, not only weights (a whole model, as "
            "autoprune.load reads); give a state_dict, e.g. torch.save(model.state_dict(), path)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises several kinds for files that are not checkpoints
        raise AutopruneError(f"{what} {str(path)!r} is not a PyTorch checkpoint ({type(exc).__name__})") from None
    if isinstance(saved, dict) and str(saved.get("format", "")).startswith("autoprune-model"):
        raise AutopruneError(
            f"{what} {str(path)!r} is a pruned model saved by autoprune (best.pt or an export); "
            "give the unpruned model's weights (read the pruned one with autoprune.load)"
        )
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else saved
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AutopruneError(f"{what} {str(path)!r} holds no state_dict of tensors")
    return state


def load_checkpoint(model: nn.Module, path: str | Path, what: str = "checkpoint") -> Path:
    """Load the weights in ``path`` into ``model``; return the file's absolute path.

    The model remembers the file and a fingerprint of the weights, so a search
    records where its baseline came from (see :mod:`autoprune.provenance`).
    """
    path = Path(path).resolve()
    state = read_state_dict(path, what)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise AutopruneError(f"{what} {str(path)!r} does not fit the model: {detail}") from None
    note(model, weights=str(path), weights_sha256=fingerprint(model))
    return path
