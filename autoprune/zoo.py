"""Query the registries by name, in the style of ``timm.list_models`` / ``timm.create_model``."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from torch import nn

from .errors import AutopruneError
from .plugins import get_registries
from .provenance import note, storable
from .registry import Entry


def list_importances(pattern: str = "*") -> list[str]:
    """Registered importance names matching the shell-style ``pattern``."""
    return get_registries().importances.names(pattern)


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (and serving ``task``, when given)."""
    names = get_registries().models.names(pattern)
    return names if task is None else [n for n in names if model_task(n) == task]


def model_task(name: str) -> str:
    """The task registered model ``name`` serves (``register(..., task=...)``; classification when it says nothing)."""
    from .tasks import DEFAULT_TASK

    return get_registries().models.get(name).options.get("task", DEFAULT_TASK)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching the shell-style ``pattern``."""
    return get_registries().datasets.names(pattern)


def get_importance(name: str) -> Entry:
    """The registry entry of importance ``name`` (``.obj`` is the function)."""
    return get_registries().importances.get(name)


def list_weight_importances(pattern: str = "*") -> list[str]:
    """Registered weight-importance names (what weight and N:M pruning keep) matching ``pattern``."""
    return get_registries().weight_importances.names(pattern)


def get_weight_importance(name: str) -> Entry:
    """The registry entry of weight importance ``name`` (``.obj`` is the function)."""
    return get_registries().weight_importances.get(name)


def list_metrics(pattern: str = "*") -> list[str]:
    """Registered metric names (objectives, constraints) matching ``pattern``."""
    return get_registries().metrics.names(pattern)


def get_metric(name: str) -> Entry:
    """The registry entry of metric ``name`` (``.obj`` is the function; ``.options``: direction, unit)."""
    return get_registries().metrics.get(name)


def declared_options(name: str) -> Any:
    """The :class:`~autoprune.Options` class metric ``name`` declares (``register(..., options=...)``), or None."""
    return get_metric(name).options.get("options")


def list_tasks(pattern: str = "*") -> list[str]:
    """Registered task names (classification, detection, segmentation, a plugin's) matching ``pattern``."""
    return get_registries().tasks.names(pattern)


def create_task(name: str, num_classes: int) -> Any:
    """Registered task ``name`` for ``num_classes`` classes (an :class:`autoprune.Task`)."""
    return _build(get_registries().tasks.get(name), {"num_classes": num_classes})


def dataset_task(data: Any) -> Any:
    """The task a dataset names (``data.task``; classification when it names none), for its classes."""
    from .tasks import DEFAULT_TASK

    return create_task(getattr(data, "task", DEFAULT_TASK), data.num_classes)


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
    model = _build(entry, dict(num_classes=num_classes, in_channels=in_channels, **params))
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
    data = _build(entry, params)
    recordable = storable(params)
    if recordable is not None:
        note(data, dataset=name, dataset_params=recordable)
    return data


def _build(entry: Entry, params: dict[str, Any]) -> Any:
    """Call a factory; its failure is one line naming it and the parameters (the cause kept for --debug)."""
    try:
        return entry.obj(**params)
    except AutopruneError:
        raise
    except Exception as exc:
        raise AutopruneError(
            f"{entry.kind} {entry.name!r} ({entry.source}) could not be built with "
            f"{params}: {type(exc).__name__}: {exc}"
        ) from exc


def _check_params(entry: Entry, params: dict[str, Any]) -> None:
    """Refuse parameters the factory does not take, or of a type its annotations exclude."""
    try:
        signature = inspect.signature(entry.obj, eval_str=True)
    except Exception:  # noqa: BLE001 - builtins without a signature, annotations that do not evaluate: let the call decide
        try:
            signature = inspect.signature(entry.obj)
        except (TypeError, ValueError):
            return
    fields = signature.parameters
    accepted = ", ".join(fields) or "none"
    what = f"{entry.kind} {entry.name!r} ({entry.source})"
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in fields.values()):
        unknown = [key for key in params if key not in fields]
        if unknown:
            raise AutopruneError(f"{what} has no parameter {', '.join(map(repr, unknown))}; its parameters: {accepted}")
    try:
        signature.bind(**params)
    except TypeError as exc:
        raise AutopruneError(f"{what}: {exc}; its parameters: {accepted}") from None
    for key, value in params.items():
        expected = _simple_types(fields[key].annotation) if key in fields else None
        if expected and not any(_is_a(value, kind) for kind in expected):
            names = " or ".join(kind.__name__ for kind in expected)
            raise AutopruneError(f"{what} parameter {key!r} must be {names}, got {value!r}")


def _simple_types(annotation: Any) -> tuple[type, ...] | None:
    """The plain types (int, float, bool, str, None) an annotation allows, or None when it says more."""
    simple = (int, float, bool, str, type(None))
    if annotation in simple:
        return (annotation,)
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    if options and all(option in simple for option in options):
        return options
    return None


def _is_a(value: Any, kind: type) -> bool:
    if kind is float:  # an integer is a fine float; a bool is neither
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
