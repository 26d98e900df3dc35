"""Importance criteria as the engine uses them: resolved by name, called, and their scores checked.

An importance is a callable from a :class:`~autoprune.ChannelGroup` to one score
per channel (higher means keep), registered with the ``autoprune_register_importances``
hook or passed directly. Its result is validated before any channel is removed,
so a broken plugin is named in a clear error instead of corrupting a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AutopruneError, PluginError
from ..zoo import get_importance, get_weight_importance
from .groups import ChannelGroup
from .inputs import call_model, move_to

#: The importance used where none is named.
DEFAULT_IMPORTANCE = "l1"
#: The weight importance used where none is named.
DEFAULT_WEIGHT_IMPORTANCE = "magnitude"

ImportanceFn = Callable[[ChannelGroup], torch.Tensor]
ImportanceSpec = str | ImportanceFn
Batches = Iterable[tuple[Any, torch.Tensor]]
#: ``batch_loss(model, inputs, targets) -> loss``: a batch's loss as its task computes it
#: (:meth:`autoprune.Task.gradient_loss`), in place of ``loss_fn(model(inputs), targets)``.
BatchLoss = Callable[[nn.Module, Any, Any], torch.Tensor]


@dataclass(frozen=True)
class Importance:
    """A resolved importance: its name, its function, and whether it needs loss gradients."""

    name: str
    fn: ImportanceFn
    needs_grads: bool

    def scores(self, group: ChannelGroup) -> torch.Tensor:
        """The checked scores of ``group``: 1-D, one finite float64 per channel, on the CPU.

        A plugin that raises is reported as a :class:`PluginError` naming it and the group.
        """
        where = f"importance {self.name!r} on group {group.name!r}"
        return checked_scores(
            _called(self.fn, where, group),
            (group.num_channels,),
            where,
            f"({group.num_channels},), one score per channel",
        )


WeightImportanceFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class WeightImportance:
    """A resolved weight importance: its name, its function, and whether it needs loss gradients."""

    name: str
    fn: WeightImportanceFn
    needs_grads: bool

    def scores(self, layer: str, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """The checked scores of one layer's weight: its shape, finite floats, on the CPU."""
        where = f"weight importance {self.name!r} on layer {layer!r}"
        scores = _called(self.fn, where, weight.detach().clone(), None if grad is None else grad.detach().clone())
        return checked_scores(
            scores, tuple(weight.shape), where, f"the weight's {tuple(weight.shape)}, one score per weight"
        )


def resolve_importance(spec: ImportanceSpec) -> Importance:
    """A registered importance name, or a callable (``needs_grads`` read from its attribute)."""
    return _resolved(spec, Importance, get_importance, "importance")


def resolve_weight_importance(spec: str | WeightImportanceFn) -> WeightImportance:
    """A registered weight-importance name, or a callable (``needs_grads`` read from its attribute)."""
    return _resolved(spec, WeightImportance, get_weight_importance, "weight importance")


def _resolved(spec: Any, kind: type, lookup: Callable[[str], Any], what: str) -> Any:
    if isinstance(spec, str):
        entry = lookup(spec)
        return kind(spec, entry.obj, bool(entry.options.get("needs_grads", False)))
    if callable(spec):
        name = getattr(spec, "__qualname__", None) or type(spec).__name__
        return kind(name, spec, bool(getattr(spec, "needs_grads", False)))
    raise AutopruneError(f"{what} must be a registered name or a callable, got {type(spec).__name__} {spec!r}")


def _called(fn: Callable, where: str, *args: Any) -> Any:
    """``fn(*args)``; a plugin that raises is reported as a :class:`PluginError` naming it."""
    try:
        return fn(*args)
    except AutopruneError:
        raise
    except Exception as exc:  # a third party's bug: name it, keep the cause for --debug
        raise PluginError(f"{where} raised {type(exc).__name__}: {exc}") from exc


def checked_scores(scores: object, shape: tuple[int, ...], where: str, expected: str) -> torch.Tensor:
    """``scores`` as finite float64 on the CPU, or a :class:`PluginError` saying what ``where`` returned."""
    if not isinstance(scores, torch.Tensor):
        raise PluginError(f"{where} returned {type(scores).__name__}; it must return a torch.Tensor")
    if tuple(scores.shape) != shape:
        raise PluginError(f"{where} returned shape {tuple(scores.shape)}; expected {expected}")
    if not scores.is_floating_point():  # the conformance suite asks the same of every plugin
        raise PluginError(f"{where} returned dtype {scores.dtype}; scores must be floating point")
    scores = scores.detach().to("cpu", torch.float64)
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise PluginError(f"{where} returned {bad} non-finite score(s) (NaN or inf); every score must be finite")
    return scores


def weight_scores(
    model: nn.Module,
    layers: Iterable[str],
    importance: str | WeightImportanceFn,
    calibration: Batches | None = None,
    loss_fn: Callable = F.cross_entropy,
    *,
    batch_loss: BatchLoss | None = None,
) -> dict[str, torch.Tensor]:
    """``{layer: scores}`` of the named Conv and Linear layers' weights by ``importance``.

    An importance that needs gradients gets those of ``loss_fn`` (or ``batch_loss``),
    accumulated over ``calibration`` (required then); the model's ``.grad`` are cleared after.
    """
    method = resolve_weight_importance(importance)
    named = dict(model.named_modules())
    layers = list(layers)
    grads: dict[str, torch.Tensor | None] = dict.fromkeys(layers)
    if method.needs_grads:
        if calibration is None:
            raise AutopruneError(f"weight importance {method.name!r} needs gradients; pass calibration batches")
        if accumulate_grads(model, calibration, loss_fn, batch_loss) == 0:
            raise AutopruneError("calibration gave no batches; importances that need gradients need at least one")
        for name in layers:
            param = getattr(named[name], "weight_orig", None)
            param = named[name].weight if param is None else param
            grads[name] = torch.zeros_like(param) if param.grad is None else param.grad.detach().clone()
        model.zero_grad(set_to_none=True)
    return {name: method.scores(name, named[name].weight, grads[name]) for name in layers}


def accumulate_grads(
    model: nn.Module, calibration: Batches, loss_fn: Callable, batch_loss: BatchLoss | None = None
) -> int:
    """Accumulate loss gradients over ``calibration``; return the batch count.

    The loss is ``loss_fn(model(inputs), targets)`` in eval mode, so BatchNorm statistics stay
    untouched, or ``batch_loss(model, inputs, targets)`` (a task's, which sets the mode its loss
    needs). Every module's mode is restored after.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    modes = [(m, m.training) for m in model.modules()]
    model.zero_grad(set_to_none=True)
    model.eval()  # keep BatchNorm statistics untouched
    n = 0
    try:
        with torch.enable_grad():
            for inputs, targets in calibration:
                inputs = move_to(inputs, device)
                if batch_loss is not None:
                    loss = batch_loss(model, inputs, targets)
                else:
                    loss = loss_fn(call_model(model, inputs), targets.to(device))
                loss.backward()
                n += 1
    finally:
        for module, training in modes:
            module.training = training
    return n
