"""Structural pruning: channel groups, the importance adapter, and channel removal.

Channel coupling (residual adds, concatenations, depthwise and grouped
convolutions, attention) comes from Torch-Pruning's DependencyGraph
(Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023). autoprune
adds on top of it what a search needs: stable group names, per-group rates and
importance criteria, output layers found from the graph (so the model's output
never shrinks), groups that Torch-Pruning cannot index left unpruned and
reported, and a forward check of every pruned model.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch_pruning import ops
from torch_pruning.pruner import function as tpf

from . import adapters
from .errors import PluginError, PruningError, AutopruneError, unknown_name
from .plugins import get_registries

#: The importance used where none is named.
DEFAULT_IMPORTANCE = "l1"

ImportanceFn = Callable[["ChannelGroup"], torch.Tensor]
ImportanceSpec = Union[str, ImportanceFn]
Batches = Iterable[tuple[Any, torch.Tensor]]


@dataclass(frozen=True)
class CoupledLayer:
    """One layer (or bare parameter) whose channels move with a group.

    ``role`` is ``"out"`` when the group's channels are the layer's outputs and
    ``"in"`` when they are its inputs (normalization layers, depthwise
    convolutions and bare parameters are ``"out"``).
    """

    name: str
    module: nn.Module | nn.Parameter
    role: str


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Coupled channels that are pruned together, as an importance sees them.

    ``weights[i]`` is the parameter of ``layers[i]`` viewed with the group's
    channel dimension first, so ``w.flatten(1)`` has one row per channel (for a
    layer fed through a flatten, a channel's row holds all its features).
    ``grads`` has the same layout, holding loss gradients accumulated over the
    calibration batches, when the importance was registered with
    ``needs_grads=True``; otherwise it is None. The tensors are copies: changing
    them does not change the model.
    """

    name: str
    num_channels: int
    weights: list[torch.Tensor]
    grads: list[torch.Tensor] | None
    layers: list[CoupledLayer]


@dataclass(frozen=True)
class _Importance:
    name: str
    fn: ImportanceFn
    needs_grads: bool


@dataclass
class _GroupSpec:
    name: str
    root: nn.Module
    root_fn: Callable
    num_channels: int
    channel_groups: int
    group: Any  # torch_pruning Group over every channel


class _Graph:
    """Torch-Pruning's dependency graph of one model, split into named groups."""

    def __init__(self, model: nn.Module, example_inputs: Any) -> None:
        self.model = model
        num_heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
        custom = adapters.customized_pruners()
        with torch.enable_grad(), warnings.catch_warnings(), adapters.tracing_patches():
            warnings.simplefilter("ignore")
            self.dg = tp.DependencyGraph().build_dependency(
                model, example_inputs, customized_pruners=custom, verbose=False
            )
        self.out_channel_groups: dict[nn.Module, int] = dict(num_heads)
        self.in_channel_groups: dict[nn.Module, int] = {}
        for m in model.modules():
            pruner = self.dg.get_pruner_of_module(m)
            if pruner is None or _is_depthwise(m):
                continue
            if pruner.get_in_channel_groups(m) > 1:
                self.in_channel_groups[m] = pruner.get_in_channel_groups(m)
            if pruner.get_out_channel_groups(m) > 1:
                self.out_channel_groups[m] = pruner.get_out_channel_groups(m)

        self.groups: dict[str, _GroupSpec] = {}
        self.skipped: dict[str, str] = {}
        frozen = _frozen_layers(model, tuple(custom))
        visited: set[nn.Module] = set()
        for root, node in list(self.dg.module2node.items()):
            if root in visited or not isinstance(root, (ops.TORCH_CONV, ops.TORCH_LINEAR)):
                continue
            pruner = self.dg.get_pruner_of_module(root)
            if pruner is None or pruner.get_out_channels(root) is None:
                continue
            root_fn = pruner.prune_out_channels
            if _is_depthwise(root):
                root_fn = tpf.prune_depthwise_conv_out_channels
            name = self.dg._module2name[root]
            # Some streams cannot be indexed by Torch-Pruning at all (an attention block it
            # cannot see reshapes them, a channel shuffle permutes them) and building their
            # group can crash or exhaust memory, so those are decided on the index-free closure.
            early = self._closure_reason(node, root_fn, frozen)
            if early:
                visited.add(root)
                self.skipped[name] = early
                continue
            num_channels = pruner.get_out_channels(root)
            try:
                group = self.dg.get_pruning_group(root, root_fn, list(range(num_channels)))
            except Exception as exc:  # Torch-Pruning's index mapping gave up on this stream
                visited.add(root)
                self.skipped[name] = f"Torch-Pruning cannot index its channels ({type(exc).__name__}: {exc})"
                continue
            coupled = [(dep.target, dep.handler) for dep, _ in group]
            visited.update(n.module for n, fn in coupled if self.dg.is_out_channel_pruning_fn(fn))
            reason = self._unprunable_reason(coupled)
            if reason:
                self.skipped[name] = reason
                continue
            self.groups[name] = _GroupSpec(
                name=name,
                root=root,
                root_fn=root_fn,
                num_channels=num_channels,
                channel_groups=self._channel_groups(coupled),
                group=group,
            )
        self._in_model_order()

    def _in_model_order(self) -> None:
        order = {name: i for i, (name, _) in enumerate(self.model.named_modules())}
        self.groups = dict(sorted(self.groups.items(), key=lambda item: order.get(item[0], len(order))))
        self.skipped = dict(sorted(self.skipped.items(), key=lambda item: order.get(item[0], len(order))))

    def _closure_reason(self, node, fn, frozen: set[nn.Module]) -> str | None:
        for n, _ in self._closure(node, fn):
            if n.module in frozen:
                return f"{self.dg._module2name[n.module]} reads its channel count at run time"
            barrier = adapters.barrier_reason(n)
            if barrier:
                return barrier
        return None

    def _closure(self, node, fn) -> list[tuple[Any, Callable]]:
        """Every (node, pruning function) that pruning ``fn`` on ``node`` triggers."""
        seen = {(node, fn)}
        order = [(node, fn)]
        stack = [(node, fn)]
        while stack:
            current, current_fn = stack.pop()
            for dep in current.dependencies:
                if dep.is_triggered_by(current_fn) and (dep.target, dep.handler) not in seen:
                    seen.add((dep.target, dep.handler))
                    order.append((dep.target, dep.handler))
                    stack.append((dep.target, dep.handler))
        return order

    def _unprunable_reason(self, coupled) -> str | None:
        has_concat = False
        grouped_consumer = None
        for node, fn in coupled:
            module = node.module
            if node.type == ops.OPTYPE.OUTPUT or (
                self.dg.is_out_channel_pruning_fn(fn) and not node.outputs
            ):
                return "its channels are the model's outputs"
            if node.type == ops.OPTYPE.CONCAT:
                has_concat = True
            if (
                isinstance(module, ops.TORCH_CONV)
                and fn == tpf.prune_conv_in_channels
                and 1 < module.groups < module.in_channels
            ):
                grouped_consumer = self.dg._module2name.get(module, "a grouped convolution")
        if has_concat and grouped_consumer:
            # Torch-Pruning 1.6 mis-indexes a grouped convolution fed by a concatenation
            # and crashes in most cases; leave these channels alone rather than risk it.
            return f"grouped convolution {grouped_consumer} consumes a concatenation"
        return None

    def _channel_groups(self, coupled) -> int:
        counts = [1]
        for node, fn in coupled:
            table = (
                self.out_channel_groups
                if self.dg.is_out_channel_pruning_fn(fn)
                else self.in_channel_groups
            )
            counts.append(table.get(node.module, 1))
        return max(counts)

    def channel_group(self, spec: _GroupSpec, with_grads: bool) -> ChannelGroup:
        weights, grads, layers = [], [], []
        for item in spec.group:
            dep, plain = item.dep, item.idxs
            param_rows = _parameter_rows(self.dg, dep)
            if param_rows is None:
                continue
            param, to_rows, role = param_rows
            order = _channel_order(item.root_idxs, spec.num_channels)
            if order is None:
                continue
            index = torch.as_tensor(plain, dtype=torch.long)[order]
            with torch.no_grad():
                weights.append(_channel_first(to_rows(param.detach()), index, spec.num_channels))
                if with_grads:
                    g = param.grad
                    g = torch.zeros_like(param) if g is None else g.detach()
                    grads.append(_channel_first(to_rows(g), index, spec.num_channels))
            module = dep.target.module
            if isinstance(module, nn.Parameter):
                name = self.dg._param_to_name.get(module, "")
            else:
                name = self.dg._module2name.get(module, "")
            layers.append(CoupledLayer(name, dep.target.module, role))
        return ChannelGroup(
            name=spec.name,
            num_channels=spec.num_channels,
            weights=weights,
            grads=grads if with_grads else None,
            layers=layers,
        )


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, ops.TORCH_CONV) and m.groups == m.out_channels > 1


def _frozen_layers(model: nn.Module, handled: tuple[type, ...]) -> set[nn.Module]:
    """Layers whose channel count is read at run time by code Torch-Pruning cannot see.

    An attention block that reshapes its ``qkv`` output by ``num_heads`` ties
    the attention width to the head count; unless the block is
    ``nn.MultiheadAttention`` or has an adapter (``handled``), the groups
    through its ``qkv`` layer are left alone.
    """
    frozen: set[nn.Module] = set()
    for m in model.modules():
        if isinstance(m, (nn.MultiheadAttention, *handled)) or not hasattr(m, "num_heads"):
            continue
        qkv = getattr(m, "qkv", None)
        if isinstance(qkv, nn.Linear):
            frozen.add(qkv)
    return frozen


def _parameter_rows(dg, dep):
    """(parameter, fn viewing it channel-first, role) for one dependency, or None."""
    module, fn = dep.target.module, dep.handler
    out = dg.is_out_channel_pruning_fn(fn)
    if isinstance(module, nn.Parameter):
        dim = dep.target.pruning_dim
        return module, (lambda t, d=dim: t.movedim(d, 0)), "out"
    if isinstance(module, ops.TORCH_CONV):
        w = module.weight
        if _is_depthwise(module):
            return w, (lambda t: t), "out"
        if out:
            return w, ((lambda t: t.transpose(0, 1)) if module.transposed else (lambda t: t)), "out"
        if module.transposed:
            return w, (lambda t: t), "in"
        g = module.groups
        if g == 1:
            return w, (lambda t: t.transpose(0, 1)), "in"

        def grouped(t: torch.Tensor, g: int = g) -> torch.Tensor:
            # [out, in/g, *k] -> [g, out/g, in/g, *k] -> [g, in/g, out/g, *k] -> [in, -1]
            o, i = t.shape[0], t.shape[1]
            t = t.reshape(g, o // g, i, -1).transpose(1, 2)
            return t.reshape(g * i, -1)

        return w, grouped, "in"
    if isinstance(module, nn.Linear):
        return module.weight, ((lambda t: t) if out else (lambda t: t.t())), ("out" if out else "in")
    if isinstance(module, nn.Embedding):
        return module.weight, (lambda t: t.t()), "out"
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.PReLU)
    if isinstance(module, norm_types):
        w = getattr(module, "weight", None)
        if w is None or w.dim() != 1 or w.numel() == 1:
            return None
        return w, (lambda t: t.unsqueeze(1)), "out"
    return None


def _channel_first(rows: torch.Tensor, index: torch.Tensor, num_channels: int) -> torch.Tensor:
    """A copy of ``rows[index]`` with one leading entry per channel.

    When a channel owns several rows (a layer fed through a flatten), they are
    joined into one flat row.
    """
    picked = rows[index]  # advanced indexing copies
    if picked.shape[0] != num_channels:
        picked = picked.reshape(num_channels, -1)
    return picked


def _channel_order(root_idxs: list, num_channels: int) -> torch.Tensor | None:
    """Order rows by root channel when every channel owns the same number of rows."""
    if not root_idxs or any(r is None for r in root_idxs):
        return None
    counts = Counter(root_idxs)
    if len(counts) != num_channels or len(set(counts.values())) != 1 or set(counts) != set(range(num_channels)):
        return None
    return torch.argsort(torch.as_tensor(root_idxs), stable=True)


def _forward(model: nn.Module, example_inputs: Any):
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def _output_shapes(model: nn.Module, example_inputs: Any) -> list[tuple[int, ...]]:
    with torch.no_grad():
        out = _forward(model, example_inputs)
    return [tuple(t.shape) for t in tp.utils.flatten_as_list(out)]


def prunable_groups(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of the model's prunable channel groups, in the order of ``model.named_modules()``.

    A group is named after its first layer (its dotted module name); these are
    the keys :func:`prune` accepts for per-group rates and importances. Groups
    that drive the model's outputs, or that Torch-Pruning cannot prune safely,
    are left out (see :func:`unprunable_groups`).
    """
    was_training = model.training
    try:
        return list(_Graph(model, example_inputs).groups)
    finally:
        model.train(was_training)


def unprunable_groups(model: nn.Module, example_inputs: Any) -> dict[str, str]:
    """Groups that :func:`prune` leaves alone, each with the reason."""
    was_training = model.training
    try:
        return dict(_Graph(model, example_inputs).skipped)
    finally:
        model.train(was_training)


def channel_groups(
    model: nn.Module,
    example_inputs: Any,
    *,
    calibration: Batches | None = None,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> list[ChannelGroup]:
    """The :class:`ChannelGroup` of every prunable group, as an importance receives it.

    With ``calibration`` batches, ``group.grads`` holds the accumulated loss
    gradients; otherwise it is None. The model is not changed.
    """
    was_training = model.training
    try:
        graph = _Graph(model, example_inputs)
        if calibration is not None and _accumulate_grads(model, calibration, loss_fn) == 0:
            raise AutopruneError("calibration gave no batches")
        groups = [graph.channel_group(spec, with_grads=calibration is not None) for spec in graph.groups.values()]
        if calibration is not None:
            model.zero_grad(set_to_none=True)
        return groups
    finally:
        model.train(was_training)


def resolve_importance(spec: ImportanceSpec) -> _Importance:
    if isinstance(spec, str):
        entry = get_registries().importances.get(spec)
        return _Importance(spec, entry.obj, bool(entry.options.get("needs_grads", False)))
    if callable(spec):
        name = getattr(spec, "__qualname__", None) or type(spec).__name__
        return _Importance(name, spec, bool(getattr(spec, "needs_grads", False)))
    raise AutopruneError(
        f"importance must be a registered name or a callable, got {type(spec).__name__} {spec!r}"
    )


def _check_rate(rate: object, where: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise AutopruneError(f"{where} must be a number in [0, 1), got {rate!r}")
    return float(rate)


def _check_group_names(names: Iterable[str], graph: _Graph, what: str) -> None:
    for name in names:
        if name in graph.groups:
            continue
        if name in graph.skipped:
            raise PruningError(f"{what} names group {name!r}, which cannot be pruned: {graph.skipped[name]}")
        raise unknown_name(f"group in {what}", name, graph.groups)


def _validate_scores(scores: object, group: ChannelGroup, importance: _Importance) -> torch.Tensor:
    where = f"importance {importance.name!r} on group {group.name!r}"
    if not isinstance(scores, torch.Tensor):
        raise PluginError(f"{where} returned {type(scores).__name__}; it must return a torch.Tensor")
    if scores.dim() != 1 or scores.numel() != group.num_channels:
        raise PluginError(
            f"{where} returned shape {tuple(scores.shape)}; expected ({group.num_channels},), "
            "one score per channel"
        )
    scores = scores.detach().to("cpu", torch.float64)
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise PluginError(f"{where} returned {bad} non-finite score(s) (NaN or inf); every score must be finite")
    return scores


def _accumulate_grads(model: nn.Module, calibration: Batches, loss_fn: Callable) -> int:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.zero_grad(set_to_none=True)
    model.eval()  # keep BatchNorm statistics untouched
    n = 0
    with torch.enable_grad():
        for inputs, targets in calibration:
            inputs = inputs.to(device) if isinstance(inputs, torch.Tensor) else inputs
            loss = loss_fn(_forward(model, inputs), targets.to(device))
            loss.backward()
            n += 1
    return n


def _pruning_indices(scores: torch.Tensor, spec: _GroupSpec, rate: float) -> list[int]:
    cg = spec.channel_groups
    if spec.num_channels % cg:
        cg = 1
    size = spec.num_channels // cg
    per_channel = scores.view(cg, size).mean(0) if cg > 1 else scores
    n_prune = min(int(math.floor(rate * size + 1e-9)), size - 1)
    if n_prune <= 0:
        return []
    local = torch.argsort(per_channel, stable=True)[:n_prune]
    idxs = torch.cat([local + g * size for g in range(cg)])
    return sorted(idxs.tolist())


def prune(
    model: nn.Module,
    example_inputs: Any,
    rates: float | Mapping[str, float],
    importance: ImportanceSpec | Mapping[str, ImportanceSpec] = DEFAULT_IMPORTANCE,
    *,
    calibration: Batches | None = None,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] = F.cross_entropy,
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

    The output shape never changes; the pruned model is checked with a forward pass.
    """
    was_training = model.training
    try:
        reference = _output_shapes(model.eval(), example_inputs)
        graph = _Graph(model, example_inputs)

        if isinstance(rates, Mapping):
            _check_group_names(rates, graph, "rates")
            group_rates = {n: _check_rate(r, f"rate of group {n!r}") for n, r in rates.items()}
        else:
            rate = _check_rate(rates, "rates")
            group_rates = {n: rate for n in graph.groups}

        if isinstance(importance, Mapping):
            _check_group_names(importance, graph, "importance")
            resolved = {k: resolve_importance(v) for k, v in importance.items()}
            default = resolve_importance(DEFAULT_IMPORTANCE)
            methods = {n: resolved.get(n, default) for n in graph.groups}
        else:
            single = resolve_importance(importance)
            methods = {n: single for n in graph.groups}

        active = [n for n, r in group_rates.items() if r > 0]
        needing = sorted({methods[n].name for n in active if methods[n].needs_grads})
        if needing:
            if calibration is None:
                raise AutopruneError(
                    f"importance {', '.join(repr(n) for n in needing)} needs gradients; "
                    "pass calibration=[(inputs, targets), ...] batches to prune()"
                )
            if _accumulate_grads(model, calibration, loss_fn) == 0:
                raise AutopruneError("calibration gave no batches; importances that need gradients need at least one")

        plans = []
        for name in active:
            spec, method = graph.groups[name], methods[name]
            group = graph.channel_group(spec, with_grads=method.needs_grads)
            scores = _validate_scores(method.fn(group), group, method)
            idxs = _pruning_indices(scores, spec, group_rates[name])
            if idxs:
                plans.append((spec, idxs))
        if needing:
            model.zero_grad(set_to_none=True)

        for spec, idxs in plans:
            try:
                pruning_group = graph.dg.get_pruning_group(spec.root, spec.root_fn, idxs)
                if graph.dg.check_pruning_group(pruning_group):
                    pruning_group.prune()
            except Exception as exc:  # a Torch-Pruning limitation we did not foresee
                raise PruningError(
                    f"Torch-Pruning failed on group {spec.name!r} ({type(exc).__name__}: {exc}); "
                    "exclude it with a per-group rates dict"
                ) from exc
        adapters.sync_attributes(model)

        try:
            after = _output_shapes(model.eval(), example_inputs)
        except Exception as exc:  # a Torch-Pruning limitation we did not foresee
            raise PruningError(
                f"the pruned model fails its forward check ({type(exc).__name__}: {exc}); "
                "exclude the failing groups with a per-group rates dict"
            ) from exc
        if after != reference:
            raise PruningError(f"pruning changed the output shape from {reference} to {after}")
        return model
    finally:
        model.train(was_training)

