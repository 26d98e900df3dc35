"""Where a model, its weights and its data came from, so a study can record it.

:func:`autoprune.create_model` and :func:`autoprune.create_dataset` note the
registered name and parameters on the object they return, and
:func:`autoprune.load_checkpoint` notes the file the weights came from with a
fingerprint of them (much as timm keeps ``pretrained_cfg`` on its models). A
search reads these notes, so a study made from Python records what it needs to
rebuild its models later, from any working directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: The attribute that holds the notes.
ATTRIBUTE = "autoprune_source"


def note(obj: Any, **facts: Any) -> None:
    """Add ``facts`` to the notes of ``obj`` (silently skipped for objects that take no attributes)."""
    notes = {**provenance(obj), **facts}
    try:
        object.__setattr__(obj, ATTRIBUTE, notes)
    except (AttributeError, TypeError):  # slotted or built-in objects
        pass


def provenance(obj: Any) -> dict[str, Any]:
    """The notes of ``obj`` (empty when it did not come through autoprune's factories)."""
    notes = getattr(obj, ATTRIBUTE, None)
    return dict(notes) if isinstance(notes, dict) else {}


def storable(params: dict[str, Any]) -> dict[str, Any] | None:
    """``params`` as a study can store them (JSON), with paths made absolute; None if impossible.

    A path (a ``Path``, or a string naming an existing file or folder relative to the
    working directory) becomes absolute, so the study rebuilds the same data from any
    folder. Values JSON cannot hold (a transform object, say) make the whole set
    unrecordable: a study then asks for the object instead of rebuilding a wrong one.
    """

    def convert(value: Any) -> Any:
        if isinstance(value, Path) or (
            isinstance(value, str) and value and not os.path.isabs(value) and os.path.exists(value)
        ):
            return str(Path(value).resolve())
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: convert(v) for k, v in value.items()}
        raise TypeError(type(value).__name__)

    try:
        return {k: convert(v) for k, v in params.items()}
    except TypeError:
        return None


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's state (names, shapes, dtypes and values), to tell weights apart."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    """The machine and the versions a study ran with: ``{"machine": str, "versions": {package: version}}``."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("autoprune", "torch", "torch-pruning", "optuna"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    versions["torch"] = torch.__version__
    threads = torch.get_num_threads()
    return {
        "machine": f"{_cpu()}, {threads} thread{'' if threads == 1 else 's'}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "versions": versions,
    }


def split_sizes(data: Any) -> dict[str, int]:
    """How many samples each split of ``data`` (a :class:`~autoprune.DataSplits`) holds."""
    return {name: len(split) for name in ("train", "val", "test") if (split := getattr(data, name, None)) is not None}


def _cpu() -> str:
    """The processor's name (Linux's /proc/cpuinfo, else what the platform says)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
