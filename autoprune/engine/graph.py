"""Torch-Pruning's dependency graph of one model, split into named channel groups.

Channel coupling (residual adds, concatenations, depthwise and grouped
convolutions, attention) comes from Torch-Pruning's DependencyGraph
(Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023). On top of
it, :class:`ChannelGraph` gives every group a stable name (its first layer's),
finds the output layers from the graph (so the model's output never shrinks),
leaves groups that Torch-Pruning cannot index unpruned with the reason, and
shows each group to importances as a :class:`ChannelGroup`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops
from torch_pruning.pruner import function as tpf

from ..errors import PruningError
from . import adapters
from .groups import ChannelGroup, CoupledLayer


@dataclass
class GroupSpec:
    name: str
    root: nn.Module
    root_fn: Callable
    num_channels: int
    channel_groups: int
    group: Any  # torch_pruning Group over every channel


class ChannelGraph:
    """Torch-Pruning's dependency graph of one model, split into named groups."""

    def __init__(self, model: nn.Module, example_inputs: Any) -> None:
        self.model = model
        #: Every module's qualified name in ``model`` (pruning changes modules in place, never replaces them).
        self.module_names: dict[nn.Module, str] = {module: name for name, module in model.named_modules()}
        num_heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
        custom = adapters.customized_pruners()
        forward = adapters.network_forward(model)
        with torch.enable_grad(), warnings.catch_warnings(), adapters.tracing_patches(model), _trainable(model):
            warnings.simplefilter("ignore")
            try:
                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs, forward_fn=forward, customized_pruners=custom, verbose=False
                )
            except (TypeError, IndexError, ValueError, KeyError, AssertionError) as exc:  # its tracer gave up
                raise PruningError(
                    f"Torch-Pruning cannot trace the channel dependencies of {type(model).__name__} "
                    f"({type(exc).__name__}: {exc}); no group of it can be pruned"
                ) from exc
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

        self.groups: dict[str, GroupSpec] = {}
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
            name = self.module_names[root]
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
            except Exception as exc:  # noqa: BLE001 - Torch-Pruning's index mapping gave up on this stream
                visited.add(root)
                self.skipped[name] = f"Torch-Pruning cannot index its channels ({type(exc).__name__}: {exc})"
                continue
            coupled = [(dep.target, dep.handler) for dep, _ in group]
            visited.update(n.module for n, fn in coupled if self.dg.is_out_channel_pruning_fn(fn))
            reason = self._unprunable_reason(coupled) or self._out_of_range_reason(group)
            if reason:
                self.skipped[name] = reason
                continue
            self.groups[name] = GroupSpec(
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
                return f"{self.module_names[n.module]} reads its channel count at run time"
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
        has_concat = has_split = False
        grouped_consumer = None
        for node, fn in coupled:
            module = node.module
            if node.type == ops.OPTYPE.OUTPUT or (self.dg.is_out_channel_pruning_fn(fn) and not node.outputs):
                return "its channels are the model's outputs"
            if node.type == ops.OPTYPE.CONCAT:
                has_concat = True
            if node.type == ops.OPTYPE.SPLIT:
                has_split = True
            if (
                isinstance(module, ops.TORCH_CONV)
                and fn == tpf.prune_conv_in_channels
                and 1 < module.groups < module.in_channels
            ):
                grouped_consumer = self.module_names.get(module, "a grouped convolution")
        if has_split and has_concat:
            # Torch-Pruning 1.6 maps a split whose parts meet again in a concatenation (Res2Net's scales, a
            # CSP stage's halves) to the wrong channels, and the pruned model fails its forward pass.
            return "its channels are split into parts that are concatenated again"
        if has_concat and grouped_consumer:
            # Torch-Pruning 1.6 mis-indexes a grouped convolution fed by a concatenation
            # and crashes in most cases; leave these channels alone rather than risk it.
            return f"grouped convolution {grouped_consumer} consumes a concatenation"
        return None

    def _out_of_range_reason(self, group) -> str | None:
        """Why Torch-Pruning's index mapping of ``group`` (built over all its channels) cannot be trusted: an
        index past the end of a layer's channels, as its mapping through a transpose or reshape it cannot
        follow gives (MLP-Mixer's token mixing, LeViT's attention, a GLU's halves)."""
        for item in group:
            rows = _parameter_rows(self.dg, item.dep)
            if rows is None or not item.idxs:
                continue
            param, to_rows, _ = rows
            size = to_rows(param.detach()).shape[0]
            if max(item.idxs) >= size:
                name = self.module_names.get(item.dep.target.module, "a parameter")
                return (
                    f"Torch-Pruning maps its channels past the {size} of {name} "
                    f"(index {max(item.idxs)}: a split or reshape it cannot follow)"
                )
        return None

    def _channel_groups(self, coupled) -> int:
        counts = [1]
        for node, fn in coupled:
            table = self.out_channel_groups if self.dg.is_out_channel_pruning_fn(fn) else self.in_channel_groups
            counts.append(table.get(node.module, 1))
        return max(counts)

    def channel_group(self, spec: GroupSpec, with_grads: bool) -> ChannelGroup:
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
            if isinstance(module, nn.Parameter):  # pruning replaces a parameter: look its name up now
                name = next((n for n, p in self.model.named_parameters() if p is module), "")
            else:
                name = self.module_names.get(module, "")
            layers.append(CoupledLayer(name, dep.target.module, role))
        return ChannelGroup(
            name=spec.name,
            num_channels=spec.num_channels,
            weights=weights,
            grads=grads if with_grads else None,
            layers=layers,
        )


@contextlib.contextmanager
def _trainable(model: nn.Module) -> Iterator[None]:
    """Every parameter requires gradients while the graph is traced (frozen layers would be invisible
    to it, as torchvision's detection backbones freeze theirs), and is restored after."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, ops.TORCH_CONV) and m.groups == m.out_channels > 1


def _frozen_layers(model: nn.Module, handled: tuple[type, ...]) -> set[nn.Module]:
    """Layers whose channel count is read at run time by code Torch-Pruning cannot see.

    An attention block that reshapes its projections' outputs by ``num_heads`` (and a stored head width)
    ties the attention width to the head count; unless the block is ``nn.MultiheadAttention`` or has an
    adapter (``handled``), the groups through its ``qkv`` layer, or its separate ``q``, ``k``, ``v`` and
    ``kv`` layers (PVT v2, CaiT's class attention), are left alone.
    """
    frozen: set[nn.Module] = set()
    for m in model.modules():
        if isinstance(m, (nn.MultiheadAttention, *handled)) or not hasattr(m, "num_heads"):
            continue
        for name in _ATTENTION_PROJECTIONS:
            projection = getattr(m, name, None)
            if isinstance(projection, nn.Module):  # a Linear, or a block holding one (ultralytics' Attention)
                frozen.update(layer for layer in projection.modules() if isinstance(layer, (nn.Linear, nn.Conv2d)))
    return frozen


#: The names attention blocks give the projections whose outputs they reshape by head.
_ATTENTION_PROJECTIONS = ("qkv", "q", "k", "v", "kv")


def _parameter_rows(dg, dep):
    """(parameter, fn viewing it channel-first, role) for one dependency, or None."""
    module, fn = dep.target.module, dep.handler
    out = dg.is_out_channel_pruning_fn(fn)
    if isinstance(module, nn.Parameter):
        dim = dep.target.pruning_dim
        # one row per channel, also for a 1-D parameter (ConvNeXt's layer scale, a LayerNorm2d weight)
        return module, (lambda t, d=dim: t.movedim(d, 0).reshape(t.shape[d], -1)), "out"
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
    norm_types = (
        nn.modules.batchnorm._BatchNorm,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.PReLU,
    )
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
