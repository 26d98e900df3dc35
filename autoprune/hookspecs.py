"""The plugin hooks of autoprune, in the order a user meets them.

Every hook receives a ``register`` callable: the core owns naming, duplicate
detection and bookkeeping of where each object came from, so a plugin only
says what it provides. Plugins implement hooks with :data:`hookimpl`::

    import autoprune

    @autoprune.hookimpl
    def autoprune_register_importances(register):
        register("my_metric", my_metric, description="...")

Every hook is called once per plugin when autoprune builds its
registries; their return values are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy
import torch

if TYPE_CHECKING:
    from .settings import Options

PROJECT_NAME = "autoprune"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RegisterImportance(Protocol):
    def __call__(
        self,
        name: str,
        fn: Callable[[Any], torch.Tensor],
        *,
        needs_grads: bool = False,
        description: str = "",
    ) -> None: ...


class RegisterWeightImportance(Protocol):
    def __call__(
        self,
        name: str,
        fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        *,
        needs_grads: bool = False,
        description: str = "",
    ) -> None: ...


class RegisterMetric(Protocol):
    def __call__(
        self,
        name: str,
        fn: Callable[[torch.nn.Module, Any], float],
        *,
        direction: str = "minimize",
        unit: str = "",
        description: str = "",
        options: type[Options] | None = None,
    ) -> None: ...


class RegisterModel(Protocol):
    def __call__(
        self, name: str, factory: Callable[..., torch.nn.Module], *, task: str = "classification", description: str = ""
    ) -> None: ...


class RegisterTask(Protocol):
    def __call__(self, name: str, factory: Callable[[int], Any], *, description: str = "") -> None: ...


class RegisterDataset(Protocol):
    def __call__(self, name: str, factory: Callable[..., Any], *, description: str = "") -> None: ...


@hookspec
def autoprune_register_importances(register: RegisterImportance) -> None:
    """Register channel-importance criteria.

    Call ``register(name, fn, *, needs_grads=False, description="")`` once per
    criterion. ``fn(group: autoprune.ChannelGroup) -> torch.Tensor`` returns one
    finite score per channel of the group (a 1-D tensor of length
    ``group.num_channels``); higher means keep. With ``needs_grads=True`` the
    core accumulates loss gradients over calibration batches into
    ``group.grads`` before calling ``fn``; otherwise ``group.grads`` is None.
    """


@hookspec
def autoprune_register_weight_importances(register: RegisterWeightImportance) -> None:
    """Register weight-importance criteria: what weight pruning (granularity ``weight`` or ``nm``) keeps.

    Call ``register(name, fn, *, needs_grads=False, description="")`` once per
    criterion. ``fn(weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor``
    returns one finite score per weight of a Conv or Linear layer (a tensor of
    ``weight.shape``); higher means keep. With ``needs_grads=True`` ``grad`` holds
    the loss gradients of ``weight`` accumulated over calibration batches (in eval
    mode); otherwise it is None. The study setting ``weight_importance`` names one.
    """


@hookspec
def autoprune_register_metrics(register: RegisterMetric) -> None:
    """Register metrics: numbers measured on every pruned candidate, usable as objectives and constraints.

    Call ``register(name, fn, *, direction="minimize", unit="", description="",
    options=None)`` once per metric. ``fn(model: torch.nn.Module, context:
    autoprune.MetricContext) -> float`` measures the candidate (pruned, recalibrated,
    in eval mode); the context holds the validation batches, an example input, the
    latency batch, the seed, and ``context.baseline(name)``, any metric of the
    unpruned model (measured once, cached). ``direction`` says which way is better.
    ``options``: the metric's own settings, an :class:`autoprune.Options` dataclass; a
    study gives them in ``[metrics.<name>]``, validated and stored with it, and ``fn``
    reads them with ``context.options(name)``. A study names metrics in ``objective``
    and ``[constraints]`` (``name = bound``: at most the bound for a minimized metric,
    at least for a maximized one).
    """


@hookspec
def autoprune_register_models(register: RegisterModel) -> None:
    """Register model factories.

    Call ``register(name, factory, *, task="classification", description="")`` once
    per model. ``factory(num_classes: int, in_channels: int, **params) -> torch.nn.Module``
    builds an untrained model whose input has ``in_channels`` channels and whose
    output has ``num_classes`` logits; ``task`` names the registered task whose
    batches it takes and whose outputs it gives (``"detection"``: torchvision's
    detector interface; ``"segmentation"``: per-pixel logits).
    """


@hookspec
def autoprune_register_datasets(register: RegisterDataset) -> None:
    """Register dataset factories.

    Call ``register(name, factory, *, description="")`` once per dataset.
    ``factory(**params)`` returns an object with ``.train`` and ``.val`` (torch
    Datasets of ``(input, label)``; val is carved from the training data with a
    fixed seed), ``.test`` (a Dataset or None; never used by the search),
    ``.num_classes`` (int) and ``.input_shape`` (``(C, H, W)``), such as
    :class:`autoprune.DataSplits`; optionally ``.task``, what its targets are
    (``"classification"`` when absent; ``"detection"``: dicts of ``boxes`` and
    ``labels``; ``"segmentation"``: per-pixel class maps).
    """


@hookspec
def autoprune_register_tasks(register: RegisterTask) -> None:
    """Register tasks: how a dataset's batches feed a model, its training loss and its score.

    Call ``register(name, factory, *, description="")`` once per task.
    ``factory(num_classes: int)`` returns an object with the methods and attributes
    of :class:`autoprune.Task` (subclass it and override what differs): ``collate``
    (a DataLoader's ``collate_fn``), ``example`` (a sample's input as the model
    takes it), ``predict``, ``loss(model, inputs, targets)``, ``scores(model,
    batches) -> {metric: points, ...}``, ``metric`` (the score's name; points,
    higher is better) and ``extra_metrics``. A dataset names its task in its
    ``task`` attribute.
    """
