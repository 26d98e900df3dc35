"""Query the registries by name, in the style of ``timm.list_models`` / ``timm.create_model``."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .errors import AutopruneError
from .plugins import get_registries
from .provenance import note, storable
from .registry import Entry


def list_importances(pattern: str = "*") -> list[str]:
    """Registered importance names matching the shell-style ``pattern``."""
    return get_registries().importances.names(pattern)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``."""
    return get_registries().models.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching the shell-style ``pattern``."""
    return get_registries().datasets.names(pattern)


def get_importance(name: str) -> Entry:
    """The registry entry of importance ``name`` (``.obj`` is the function)."""
    return get_registries().importances.get(name)


def create_model(name: str, num_classes: int, in_channels: int = 3, **params: Any) -> nn.Module:
    """Build registered model ``name`` for ``num_classes`` classes and ``in_channels`` input channels.

    The model remembers its name and parameters (:mod:`autoprune.provenance`), so a
    study searched on it can rebuild it later.
    """
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AutopruneError(f"{arg} must be a positive integer, got {value!r}")
    entry = get_registries().models.get(name)
    _check_params(entry, dict(num_classes=num_classes, in_channels=in_channels, **params))
    model = entry.obj(num_classes=num_classes, in_channels=in_channels, **params)
    recordable = storable(params)
    if recordable is not None:
        note(model, model=name, model_params=recordable, num_classes=num_classes, in_channels=in_channels)
    return model


def create_dataset(name: str, **params: Any) -> Any:
    """Build registered dataset ``name`` with ``params``; returns its splits.

    The splits remember the dataset's name and parameters (:mod:`autoprune.provenance`).
    """
    entry = get_registries().datasets.get(name)
    _check_params(entry, params)
    data = entry.obj(**params)
    recordable = storable(params)
    if recordable is not None:
        note(data, dataset=name, dataset_params=recordable)
    return data


def _check_params(entry: Entry, params: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(entry.obj)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(**params)
    except TypeError as exc:
        accepted = ", ".join(signature.parameters) or "none"
        raise AutopruneError(
            f"{entry.kind} {entry.name!r} ({entry.source}) does not accept "
            f"{sorted(params)}: {exc}; its parameters: {accepted}"
        ) from None
