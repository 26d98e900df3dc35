"""Files of weights: written atomically, read with ``weights_only=True`` by one function.

A checkpoint is a ``state_dict``, or a dict holding one under ``"state_dict"``
(what autoprune's baseline cache writes). A crash never leaves a half-written
file that a later run would trust, and loading never unpickles arbitrary
objects: ``torch.load(..., weights_only=True)`` only.
"""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import AutopruneError
from .files import atomic_write
from .provenance import fingerprint, note, provenance


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state_dict in ``path``, read with ``weights_only=True``; a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        raise AutopruneError(
            f"{what} {str(path)!r} is a folder, not a checkpoint file (a state_dict saved with torch.save)"
        )
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
    name = provenance(model).get("model")
    load_weights(model, state, f"{what} {str(path)!r}", f"model {name!r}" if name else "the model")
    note(model, weights=str(path), weights_sha256=fingerprint(model))
    return path


#: How many names of each kind a mismatch shows.
SHOWN_NAMES = 3


def mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """How ``state`` does not fit ``model``, in one line: how many keys are missing, unexpected and of
    another shape, with the first few of each; None when every key is there with the model's shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]

    def some(names: list[str], sep: str = ", ") -> str:
        return sep.join(names[:SHOWN_NAMES]) + (f"{sep}..." if len(names) > SHOWN_NAMES else "")

    parts = [
        f"{len(missing)} missing key{'s' * (len(missing) != 1)} ({some(missing)})" if missing else "",
        f"{len(unexpected)} unexpected ({some(unexpected)})" if unexpected else "",
        f"{len(shapes)} with another shape ({some(shapes, '; ')})" if shapes else "",
    ]
    return ", ".join(p for p in parts if p) or None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], what: str, target: str = "the model") -> None:
    """``model.load_state_dict(state)``, or one line saying how ``what`` does not fit ``target`` (see
    :func:`mismatch`) in place of torch's list of every key."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        problem = mismatch(model, state)
        if problem is None:  # the keys fit, but a module's own loading refused them
            problem = textwrap.shorten(" ".join(str(exc).split()), 300, placeholder=" ...")
        raise AutopruneError(f"{what} does not fit {target}: {problem}") from None
