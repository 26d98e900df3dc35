"""Elastic (soft) channel pruning: the channels a plan would remove are zeroed, not removed, while the model trains.

:class:`ChannelMasks` ranks each group's channels on the model's current weights, with the plan's
importances and rates, and zeroes the weights that read the lowest-ranked ones: the input side of
every layer they feed (a convolution's or linear layer's columns for them). The network then
computes exactly what it computes with those channels removed, where a BatchNorm normalizes each
channel on its own (a LayerNorm over channels still counts them in its statistics). With
``feedback``, the zeroed weights keep dense values that every optimizer step's update moves, and
the next ranking is on those, so a channel zeroed early whose weights would have grown comes back
and another is zeroed in its place (soft, recoverable pruning: He et al., "Soft Filter Pruning for
Accelerating Deep Convolutional Neural Networks", IJCAI 2018; with the error feedback of Lin et al.,
"Dynamic Model Pruning with Feedback", ICLR 2020). Without it, zeroed weights stay zero, as gradual
pruning's masks do (Zhu and Gupta, "To prune, or not to prune", 2017).

Zeroing the readers rather than a channel's own filters, as SFP does, is what keeps it recoverable
under BatchNorm: a zero filter's batch variance is 0, so its gradient is about 1/sqrt(eps), some 300
times, larger than the others' and it comes back at full strength after one step, or never where the
BatchNorm's shift is negative and a ReLU passes no gradient (on the digits model, its zeroed filters
had 6 times the norm of the others after one step, or stayed at zero, and soft fine-tuning lost half
its accuracy). Without feedback, a magnitude ranking never brings a channel back: its zeroed weights
rank it last.

:meth:`ChannelMasks.cut` removes the last zeroed channels for good, with :func:`~autoprune.engine.prune`
ranking on the same scores, so the result has exactly the widths the rates give (rounded as ``prune``
rounds them). ``select(fraction)`` zeroes a fraction of each group's count, which the gradual
schedule of :mod:`autoprune.plan.elastic` raises from 0 to 1.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_pruning import ops

from .graph import ChannelGraph, GroupSpec
from .importance import DEFAULT_IMPORTANCE, Batches, BatchLoss, ImportanceSpec
from .prune import (
    LossFn,
    importances_per_group,
    loss_gradients,
    mode_kept,
    prune,
    pruning_indices,
    rates_per_group,
)


class ChannelMasks:
    """Zeroes the channels that ``rates`` and ``importance`` select in ``model``, in place, on demand.

    Args:
        model: the unpruned network, trained while the masks act on it (its modules are never replaced).
        example_inputs: an input batch that traces it, as :func:`~autoprune.engine.prune` takes.
        rates, importance: the plan's, as :func:`~autoprune.engine.prune` takes them.
        calibration, loss_fn, batch_loss: the gradients of an importance that needs them, as for ``prune``.
        round_to, round_min: the rounding of the final widths, as for ``prune``.
        feedback: keep the zeroed weights' dense values, moved by every step's update, and rank on them
            (see :meth:`reapply`): a zeroed channel whose weights would have grown comes back.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        rates: float | Mapping[str, float],
        importance: ImportanceSpec | Mapping[str, ImportanceSpec] = DEFAULT_IMPORTANCE,
        *,
        calibration: Batches | None = None,
        loss_fn: LossFn = F.cross_entropy,
        batch_loss: BatchLoss | None = None,
        round_to: int = 1,
        round_min: int = 0,
        feedback: bool = False,
    ) -> None:
        self.model, self.example_inputs = model, example_inputs
        with mode_kept(model):
            self.graph = ChannelGraph(model, example_inputs)
        group_rates = rates_per_group(rates, self.graph)
        self.rates = {n: r for n, r in group_rates.items() if r > 0}
        self.importance = importance
        self.methods = importances_per_group(importance, self.graph, list(self.rates))
        self.calibration, self.loss_fn, self.batch_loss = calibration, loss_fn, batch_loss
        self.round_to, self.round_min = round_to, round_min
        #: The channels (the group's own indices) zeroed by the last :meth:`select`, per group.
        self.selected: dict[str, list[int]] = {}
        #: The scores the last :meth:`select` ranked on, keyed as ``prune``'s cache is.
        self.scores: dict[tuple[str, str], torch.Tensor] = {}
        self.feedback = feedback
        #: Each zeroed tensor with its mask (True: zeroed) and, with feedback, the dense values under it.
        self._zeroed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def select(self, fraction: float = 1.0) -> dict[str, list[int]]:
        """Rank every group's channels on the current weights and zero the lowest ``fraction`` of its count.

        ``fraction`` 1 zeroes what the rates remove (rounded as the cut will be); less zeroes that share of
        each rate, unrounded. Returns the zeroed channels per group and keeps them for :meth:`reapply`."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        users = sorted({m.name for m in self.methods.values() if m.needs_grads})
        with mode_kept(self.model), torch.no_grad():
            self._restore_dense()
            with (
                torch.enable_grad(),
                loss_gradients(
                    self.model, self.calibration, self.loss_fn, self.batch_loss, needed=bool(users), users=users
                ),
            ):
                for name, method in self.methods.items():
                    group = self.graph.channel_group(self.graph.groups[name], with_grads=method.needs_grads)
                    self.scores[name, method.name] = method.scores(group).detach().float().cpu()
            self.selected = {}
            for name, method in self.methods.items():
                spec = self.graph.groups[name]
                rounding = (self.round_to, self.round_min) if fraction >= 1.0 else (1, 0)
                self.selected[name] = pruning_indices(
                    self.scores[name, method.name], spec, self.rates[name] * fraction, *rounding
                )
            groups = self.graph.groups
            masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            for name, idxs in self.selected.items():
                for tensor, mask in _targets(self.graph, groups[name], idxs):
                    _, before = masks.get(id(tensor), (tensor, torch.zeros_like(mask)))
                    masks[id(tensor)] = (tensor, before | mask)
            self._zeroed = [
                (tensor, mask, tensor.detach() * mask if self.feedback else None) for tensor, mask in masks.values()
            ]
            self.reapply(accumulate=False)
        return self.selected

    def reapply(self, *, accumulate: bool = True) -> None:
        """Zero the channels of the last :meth:`select` again, after an optimizer step moved their weights.

        With ``feedback``, what the step moved them by is added to their dense values first, which the next
        :meth:`select` ranks on (error feedback: Lin et al., "Dynamic Model Pruning with Feedback", ICLR 2020)."""
        with torch.no_grad():
            for tensor, mask, dense in self._zeroed:
                if dense is not None and accumulate:
                    dense.add_(tensor * mask)
                tensor.masked_fill_(mask, 0.0)

    def _restore_dense(self) -> None:
        """With feedback, put the zeroed weights' dense values back (after the last step's update)."""
        if not self.feedback:
            return
        self.reapply()
        for tensor, mask, dense in self._zeroed:
            tensor.add_(dense * mask)
        self._zeroed = []

    def widths(self) -> dict[str, int]:
        """``{group: channels left}`` once the last selection is cut."""
        return {
            name: self.graph.groups[name].num_channels - len(self.selected.get(name, ())) for name in self.graph.groups
        }

    def cut(self, removed: MutableMapping[str, dict[str, list[int]]] | None = None) -> nn.Module:
        """Remove the channels of the last full selection (``select(1.0)``) from the model, in place, and return it.

        ``prune`` ranks on the scores that selection ranked on, so it removes exactly the zeroed channels."""
        if not self.rates:
            return self.model
        return prune(
            self.model,
            self.example_inputs,
            self.rates,
            importance=self.importance,
            scores=dict(self.scores),
            round_to=self.round_to,
            round_min=self.round_min,
            removed=removed,
        )


def _targets(graph: ChannelGraph, spec: GroupSpec, idxs: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(tensor, mask)`` for the group's channels ``idxs``: the entries of every layer that reads them
    (the weights of their input side), which zeroed make the network compute what it computes without them."""
    if not idxs:
        return []
    chosen = set(idxs)
    found = []
    for item in spec.group:
        dep = item.dep
        if graph.dg.is_out_channel_pruning_fn(dep.handler) or not item.root_idxs:
            continue
        local = sorted({int(i) for i, root in zip(item.idxs, item.root_idxs) if root in chosen})
        if local:
            found += _input_entries(dep.target.module, local)
    return found


def _input_entries(module: nn.Module | nn.Parameter, channels: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight, mask)``: the weights of ``module`` that read its input ``channels``."""
    if isinstance(module, ops.TORCH_CONV):
        weight, groups = module.weight, module.groups
        if module.transposed:  # [in, out / groups, *kernel]
            return [(weight, _rows_mask(weight, 0, channels))]
        if groups == module.in_channels == module.out_channels:  # depthwise: its outputs are the channels too
            return []
        per_group, out_per_group = weight.shape[1], weight.shape[0] // groups
        mask = torch.zeros_like(weight, dtype=torch.bool)
        for c in channels:  # input channel c is column c % per_group of its group's filters
            g = c // per_group
            mask[g * out_per_group : (g + 1) * out_per_group, c % per_group] = True
        return [(weight, mask)]
    if isinstance(module, nn.Linear):
        return [(module.weight, _rows_mask(module.weight, 1, channels))]
    if isinstance(module, nn.MultiheadAttention):
        weights = [module.in_proj_weight] if module.in_proj_weight is not None else []
        weights = weights or [
            w for w in (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight) if w is not None
        ]
        return [(w, _rows_mask(w, 1, channels)) for w in weights]
    return []


def _rows_mask(tensor: torch.Tensor, dim: int, index: list[int]) -> torch.Tensor:
    mask = torch.zeros_like(tensor, dtype=torch.bool)
    mask.index_fill_(dim, torch.as_tensor(index, dtype=torch.long, device=tensor.device), True)
    return mask
