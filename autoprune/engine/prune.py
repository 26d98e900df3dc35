"""Channel removal: per-group rates and importances applied to a model, checked by a forward pass."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AutopruneError, PruningError, unknown_name
from . import adapters
from .graph import ChannelGraph, GroupSpec
from .groups import ChannelGroup
from .importance import (
    DEFAULT_IMPORTANCE,
    Batches,
    BatchLoss,
    Importance,
    ImportanceSpec,
    accumulate_grads,
    resolve_importance,
)
from .inputs import output_shapes

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


def prunable_groups(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of the model's prunable channel groups, in the order of ``model.named_modules()``.

    A group is named after its first layer (its dotted module name); these are
    the keys :func:`prune` accepts for per-group rates and importances. Groups
    that drive the model's outputs, or that Torch-Pruning cannot prune safely,
    are left out (see :func:`unprunable_groups`).
    """
    with mode_kept(model):
        return list(ChannelGraph(model, example_inputs).groups)


def unprunable_groups(model: nn.Module, example_inputs: Any) -> dict[str, str]:
    """Groups that :func:`prune` leaves alone, each with the reason."""
    with mode_kept(model):
        return dict(ChannelGraph(model, example_inputs).skipped)


def channel_groups(
    model: nn.Module, example_inputs: Any, *, calibration: Batches | None = None, loss_fn: LossFn = F.cross_entropy
) -> list[ChannelGroup]:
    """The :class:`ChannelGroup` of every prunable group, as an importance receives it.

    With ``calibration`` batches, ``group.grads`` holds the accumulated loss
    gradients; otherwise it is None. The model is not changed.
    """
    with mode_kept(model):
        graph = ChannelGraph(model, example_inputs)
        with loss_gradients(model, calibration, loss_fn, None, needed=calibration is not None):
            return [graph.channel_group(spec, with_grads=calibration is not None) for spec in graph.groups.values()]


def group_scores(
    model: nn.Module,
    example_inputs: Any,
    importance: ImportanceSpec,
    *,
    calibration: Batches | None = None,
    loss_fn: LossFn = F.cross_entropy,
    batch_loss: BatchLoss | None = None,
    scores: MutableMapping[tuple[str, str], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The checked scores of every prunable group under one importance, ``{group: scores}``.

    ``scores`` is the same cache :func:`prune` takes. The model is not changed.
    """
    with mode_kept(model):
        graph = ChannelGraph(model, example_inputs)
        method = resolve_importance(importance)
        cache = {} if scores is None else scores
        missing = [n for n in graph.groups if (n, method.name) not in cache]
        needed = method.needs_grads and bool(missing)
        with loss_gradients(model, calibration, loss_fn, batch_loss, needed=needed, users=[method.name]):
            for name in missing:
                cache[name, method.name] = method.scores(graph.channel_group(graph.groups[name], method.needs_grads))
        return {n: cache[n, method.name] for n in graph.groups}


def group_layers(model: nn.Module, example_inputs: Any) -> dict[str, list[str]]:
    """``{group: names of the Conv and Linear layers whose output channels are the group's}``.

    Each such layer belongs to one group: the layers a group's weight sparsity applies to.
    """
    from .sparsity import MASKABLE

    with mode_kept(model):
        graph = ChannelGraph(model, example_inputs)
        found: dict[str, list[str]] = {}
        for name, spec in graph.groups.items():
            layers = graph.channel_group(spec, with_grads=False).layers
            found[name] = list(
                dict.fromkeys(
                    layer.name for layer in layers if layer.role == "out" and isinstance(layer.module, MASKABLE)
                )
            )
        return found


def group_sizes(model: nn.Module, example_inputs: Any) -> dict[str, tuple[int, int]]:
    """``{group: (channels, channel groups)}``: a rate removes the same channels from each channel group."""
    with mode_kept(model):
        return {
            n: (spec.num_channels, _channel_groups(spec))
            for n, spec in ChannelGraph(model, example_inputs).groups.items()
        }


def prune(
    model: nn.Module,
    example_inputs: Any,
    rates: float | Mapping[str, float],
    importance: ImportanceSpec | Mapping[str, ImportanceSpec] = DEFAULT_IMPORTANCE,
    *,
    calibration: Batches | None = None,
    loss_fn: LossFn = F.cross_entropy,
    batch_loss: BatchLoss | None = None,
    scores: MutableMapping[tuple[str, str], torch.Tensor] | None = None,
    round_to: int = 1,
    round_min: int = 0,
    removed: MutableMapping[str, dict[str, list[int]]] | None = None,
) -> nn.Module:
    """Remove channels from ``model`` in place and return it.

    Args:
        model: the network to prune (modified in place; pass a copy to keep the original).
        example_inputs: an input batch (tensor, tuple or dict) used to trace the model.
        rates: the fraction of each group's channels to remove, in [0, 1): one
            float for every group, or ``{group_name: rate}`` (groups not named
            keep all their channels). Names come from :func:`prunable_groups`.
        importance: a registered importance name, a callable ``fn(group) ->
            scores``, or ``{group_name: name_or_callable}`` (groups not named use
            ``"l1"``). Channels with the lowest scores are removed.
        calibration: ``(inputs, targets)`` batches; required by importances
            registered with ``needs_grads=True``, whose ``group.grads`` hold the
            gradients of ``loss_fn`` accumulated over these batches (in eval
            mode, so BatchNorm statistics are not changed).
        loss_fn: the loss whose gradients are accumulated (cross-entropy by default).
        batch_loss: ``batch_loss(model, inputs, targets) -> loss`` in place of
            ``loss_fn(model(inputs), targets)``: a task's loss, such as a detector's
            (:meth:`autoprune.Task.gradient_loss`), which sets the mode it needs.
        scores: a cache of importance scores, ``{(group, importance name): scores}``,
            read where it has an entry and filled where it has none. Scores depend
            only on the unpruned model (and the calibration batches), so a search
            that prunes copies of one baseline computes each of them once.
        round_to: keep every pruned group's channel count a multiple of this
            (Torch-Pruning's ``round_to``; 8 or 16 suit tensor cores): the kept
            count is rounded up, so a group prunes at most its rate.
        round_min: groups of fewer channels than this are not rounded (``round_to``
            applies to wider ones): a narrow group rounded to 8 could prune nothing.
        removed: filled with ``{layer name: {"in": [...], "out": [...]}}``, the
            input and output channels (indices of the unpruned layer) removed
            from every Conv and Linear layer, for :func:`~autoprune.engine.reconstruct_layers`.

    The output shape never changes; the pruned model is checked with a forward pass.
    """
    with mode_kept(model):
        reference = output_shapes(model.eval(), example_inputs)
        graph = ChannelGraph(model, example_inputs)
        group_rates = rates_per_group(rates, graph)
        methods = importances_per_group(importance, graph, [n for n, r in group_rates.items() if r > 0])
        cache = {} if scores is None else scores
        missing = {n: m for n, m in methods.items() if (n, m.name) not in cache}
        gradient_users = sorted({m.name for m in missing.values() if m.needs_grads})
        with loss_gradients(model, calibration, loss_fn, batch_loss, needed=bool(gradient_users), users=gradient_users):
            for name, method in missing.items():
                group = graph.channel_group(graph.groups[name], with_grads=method.needs_grads)
                cache[name, method.name] = method.scores(group)
        removals = [
            (graph.groups[n], pruning_indices(cache[n, m.name], graph.groups[n], group_rates[n], round_to, round_min))
            for n, m in methods.items()
        ]
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        _remove_all(graph, removals, removed)
        for name, param in model.named_parameters():  # Torch-Pruning's new parameters all require gradients
            if name in frozen:
                param.requires_grad_(False)
        adapters.sync_attributes(model)
        _check_forward(model, example_inputs, reference)
        return model


def _channel_groups(spec: GroupSpec) -> int:
    return spec.channel_groups if spec.num_channels % spec.channel_groups == 0 else 1


def pruning_indices(
    scores: torch.Tensor, spec: GroupSpec, rate: float, round_to: int = 1, round_min: int = 0
) -> list[int]:
    """The channels to remove: the lowest-scored :func:`removal_count`, the same in every channel group
    (rounded to ``round_to`` in a group of ``round_min`` channels or more)."""
    cg = _channel_groups(spec)
    size = spec.num_channels // cg
    per_channel = scores.view(cg, size).mean(0) if cg > 1 else scores
    n_prune = removal_count(size, rate, cg, round_to if spec.num_channels >= round_min else 1)
    if n_prune <= 0:
        return []
    local = torch.argsort(per_channel, stable=True)[:n_prune]
    idxs = torch.cat([local + g * size for g in range(cg)])
    return sorted(idxs.tolist())


def removal_count(size: int, rate: float, channel_groups: int = 1, round_to: int = 1) -> int:
    """Channels a rate removes from each of a group's ``channel_groups`` blocks of ``size``.

    ``floor(rate * size)``, at most ``size - 1``; with ``round_to``, fewer where needed
    so that the channels kept in all blocks together are a multiple of it (rounded
    up, as Torch-Pruning's ``round_to`` does). A group narrower than that keeps all.
    """
    n_prune = min(math.floor(rate * size + 1e-9), size - 1)
    if round_to > 1 and n_prune > 0:
        step = round_to // math.gcd(round_to, channel_groups)  # kept per block: a multiple of this
        kept = -(-(size - n_prune) // step) * step
        n_prune = max(size - kept, 0)
    return n_prune


@contextlib.contextmanager
def mode_kept(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def loss_gradients(
    model: nn.Module,
    calibration: Batches | None,
    loss_fn: LossFn,
    batch_loss: BatchLoss | None,
    *,
    needed: bool,
    users: Iterable[str] = (),
) -> Iterator[None]:
    """Loss gradients accumulated in ``.grad`` while the block runs, cleared after it."""
    if not needed:
        yield
        return
    if calibration is None:
        raise AutopruneError(
            f"importance {', '.join(repr(n) for n in users)} needs gradients; "
            "pass calibration=[(inputs, targets), ...] batches to prune()"
        )
    if accumulate_grads(model, calibration, loss_fn, batch_loss) == 0:
        raise AutopruneError("calibration gave no batches; importances that need gradients need at least one")
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)


def rates_per_group(rates: float | Mapping[str, float], graph: ChannelGraph) -> dict[str, float]:
    if isinstance(rates, Mapping):
        _check_group_names(rates, graph, "rates")
        return {n: _check_rate(r, f"rate of group {n!r}") for n, r in rates.items()}
    rate = _check_rate(rates, "rates")
    return dict.fromkeys(graph.groups, rate)


def importances_per_group(
    importance: ImportanceSpec | Mapping[str, ImportanceSpec], graph: ChannelGraph, active: list[str]
) -> dict[str, Importance]:
    """The importance of every group with a rate above 0; the default is resolved only if one needs it."""
    if not isinstance(importance, Mapping):
        single = resolve_importance(importance)
        return dict.fromkeys(active, single)
    _check_group_names(importance, graph, "importance")
    resolved = {name: resolve_importance(spec) for name, spec in importance.items()}
    unnamed = [n for n in active if n not in resolved]
    default = resolve_importance(DEFAULT_IMPORTANCE) if unnamed else None
    return {n: resolved.get(n, default) for n in active}


def _remove_all(
    graph: ChannelGraph,
    removals: list[tuple[GroupSpec, list[int]]],
    removed: MutableMapping[str, dict[str, list[int]]] | None,
) -> None:
    """Remove each group's channels in turn, recording them in the unpruned layers' indices."""
    alive: dict[tuple[str, str], list[int]] = {}  # each layer side's unpruned indices still there
    for spec, idxs in removals:
        _remove(graph, spec, idxs, removed, alive)


def _remove(
    graph: ChannelGraph,
    spec: GroupSpec,
    idxs: list[int],
    removed: MutableMapping[str, dict[str, list[int]]] | None,
    alive: dict[tuple[str, str], list[int]],
) -> None:
    if not idxs:
        return
    try:
        pruning_group = graph.dg.get_pruning_group(spec.root, spec.root_fn, idxs)
        if graph.dg.check_pruning_group(pruning_group):
            if removed is not None:
                _record_removed(graph, pruning_group, removed, alive)
            pruning_group.prune()
    except Exception as exc:  # a Torch-Pruning limitation we did not foresee
        raise PruningError(
            f"Torch-Pruning failed on group {spec.name!r} ({type(exc).__name__}: {exc}); "
            "exclude it with a per-group rates dict"
        ) from exc


def _record_removed(
    graph: ChannelGraph,
    pruning_group: Any,
    removed: MutableMapping[str, dict[str, list[int]]],
    alive: dict[tuple[str, str], list[int]],
) -> None:
    """The channels a Torch-Pruning group removes from each Conv and Linear layer, in the unpruned layer's indices.

    Torch-Pruning gives a group's indices in the layer as it is now; a layer that reads a concatenation of
    several groups (a C2f block, a DenseNet layer) has already lost channels to the groups removed before,
    so ``alive`` keeps, per layer and side, which of the unpruned indices are still there.
    """
    gone: dict[tuple[str, str], set[int]] = {}  # every item's indices are the layer's before this group
    for item in pruning_group.items:
        module = item.dep.target.module
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            continue
        side = "out" if graph.dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
        key = graph.module_names[module], side
        if key not in alive:
            alive[key] = list(range(module.weight.shape[0] if side == "out" else _in_size(module)))
        gone.setdefault(key, set()).update(int(i) for i in item.idxs)
    for (name, side), indices in gone.items():
        present = alive[name, side]
        entry = removed.setdefault(name, {})
        entry[side] = sorted({*entry.get(side, ()), *(present[i] for i in indices)})
        alive[name, side] = [index for i, index in enumerate(present) if i not in indices]


def _in_size(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


def _check_forward(model: nn.Module, example_inputs: Any, reference: list[tuple[int, ...]]) -> None:
    try:
        after = output_shapes(model.eval(), example_inputs)
    except Exception as exc:  # a Torch-Pruning limitation we did not foresee
        raise PruningError(
            f"the pruned model fails its forward check ({type(exc).__name__}: {exc}); "
            "exclude the failing groups with a per-group rates dict"
        ) from exc
    if after != reference:
        raise PruningError(f"pruning changed the output shape from {reference} to {after}")


def _check_rate(rate: object, where: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise AutopruneError(f"{where} must be a number in [0, 1), got {rate!r}")
    return float(rate)


def _check_group_names(names: Iterable[str], graph: ChannelGraph, what: str) -> None:
    for name in names:
        if name in graph.groups:
            continue
        if name in graph.skipped:
            raise PruningError(f"{what} names group {name!r}, which cannot be pruned: {graph.skipped[name]}")
        raise unknown_name(f"group in {what}", name, graph.groups)
