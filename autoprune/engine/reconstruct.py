"""Least-squares reconstruction of the layers that lost input channels.

Removing a group's channels takes inputs away from the layers that read them
(the next convolution, the classifier). Each such layer is refitted so that,
on calibration inputs, it reproduces the unpruned layer's outputs from the
channels it kept: a linear least-squares problem per layer, solved in closed
form (He, Zhang and Sun, "Channel Pruning for Accelerating Very Deep Neural
Networks", ICCV 2017; Luo, Wu and Lin, "ThiNet", ICCV 2017). Kept channels that
are correlated with the removed ones take over their contribution, which is
what makes a pruned model usable before any fine-tuning.

The fit needs only the Gram matrix of each layer's unfolded inputs on the
unpruned model, ``G = [X, 1]^T [X, 1]``: the unpruned outputs are ``X W^T + b``,
so the refitted weights of the kept inputs ``K`` solve
``(G_KK + lambda I) W_K^T = G_K: [W, b]^T``. The Gram matrices are computed once
per model and batches (:class:`InputGrams`) and serve every plan; a plan then
costs one small linear solve per layer.

Conv2d layers with ``groups=1`` and zero padding, and Linear layers, are refitted;
other layers (grouped and depthwise convolutions, whose inputs are their own
group's channels, and layers with more than ``MAX_INPUTS`` unfolded inputs) keep
the pruned weights. A layer without a bias has the constant part of the fit
dropped: the BatchNorm that follows it absorbs it when it is recalibrated.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .inputs import call_network, move_to

#: Unfolded inputs (in_channels x kernel area) above which a layer is not refitted (its Gram matrix
#: would take more than about 85 MB).
MAX_INPUTS = 4608
#: Input positions (rows of the unfolded input) kept per layer and batch, drawn at random with a
#: seed fixed per layer and batch, so a layer's Gram matrix never depends on which others were asked for.
MAX_ROWS_PER_BATCH = 4096
#: Ridge term, relative to the mean diagonal of the kept inputs' Gram matrix.
RIDGE = 1e-2


def refittable(module: nn.Module) -> bool:
    """Whether :func:`reconstruct_layers` refits this layer."""
    if isinstance(module, nn.Linear):
        return module.in_features <= MAX_INPUTS
    if isinstance(module, nn.Conv2d):
        return (
            module.groups == 1
            and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple)
            and module.weight[0].numel() <= MAX_INPUTS
        )
    return False


class InputGrams:
    """Gram matrices of the unfolded inputs of a model's layers on fixed batches, computed on first use.

    ``model`` must stay unchanged while the object is used (the unpruned baseline).
    """

    def __init__(self, model: nn.Module, batches: Iterable[tuple[Any, Any]]) -> None:
        self.model = model
        # batches that can be read again (a list, the study's streamed calibration batches) are not copied
        self.batches = batches if hasattr(batches, "__getitem__") else list(batches)
        self.grams: dict[str, torch.Tensor] = {}

    def __call__(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """``{name: Gram matrix}`` of the named layers, float64 on the CPU: the products are computed on the
        model's device, and the small solves of :func:`reconstruct_layers` run in float64 on the CPU (most
        GPUs run float64 at a thirty-second of their float32 speed or less)."""
        names = list(dict.fromkeys(names))
        missing = [n for n in names if n not in self.grams]
        if missing:
            self.grams.update(_input_grams(self.model, self.batches, missing))
        return {n: self.grams[n] for n in names}


def _input_grams(model: nn.Module, batches: Iterable, names: list[str]) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    grams: dict[str, torch.Tensor] = {}
    batch_index = [0]

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: Any) -> None:
            rows = _unfolded(module, inputs[0].detach())
            if rows.shape[0] > MAX_ROWS_PER_BATCH:
                seed = zlib.crc32(name.encode()) * 1009 + batch_index[0]
                pick = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))
                rows = rows[pick[:MAX_ROWS_PER_BATCH].to(rows.device)]
            rows = torch.cat([rows.float(), rows.new_ones(rows.shape[0], 1, dtype=torch.float32)], 1)
            gram = (rows.T @ rows).double().cpu()
            grams[name] = grams[name] + gram if name in grams else gram

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for batch_index[0], (inputs, _) in enumerate(batches):
                call_network(model, move_to(inputs, device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return grams


def _unfolded(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of its receptive fields: ``(positions, in_channels x kernel area)``."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def reconstruct_layers(
    pruned: nn.Module,
    original: nn.Module,
    grams: InputGrams,
    removed: Mapping[str, Mapping[str, list[int]]],
    ridge: float = RIDGE,
) -> list[str]:
    """Refit, in place, every layer of ``pruned`` that lost input channels; return the refitted names.

    ``original``: the model before pruning (its weights are read, not changed);
    ``grams``: its :class:`InputGrams`; ``removed``: what :func:`~autoprune.engine.prune`
    reports removed (``{layer: {"in": [...], "out": [...]}}``, in the unpruned layer's indices).
    """
    before = dict(original.named_modules())
    after = dict(pruned.named_modules())
    names = [n for n, r in removed.items() if r.get("in") and n in after and refittable(before[n])]
    for name, gram in grams(names).items():
        _refit(after[name], before[name], gram, removed[name], ridge)
    return names


def _refit(
    layer: nn.Module, unpruned: nn.Module, gram: torch.Tensor, removed: Mapping[str, list[int]], ridge: float
) -> None:
    weight = unpruned.weight.detach().double().cpu()
    out_channels, in_channels = weight.shape[:2]
    area = weight[0, 0].numel()  # kernel area; 1 for Linear
    kept_out = _kept(out_channels, removed.get("out", ()))
    kept_in = _kept(in_channels, removed["in"])
    columns = torch.cat(
        [(kept_in[:, None] * area + torch.arange(area)).reshape(-1), torch.tensor([in_channels * area])]
    )
    bias = unpruned.bias.detach().double().cpu() if unpruned.bias is not None else torch.zeros(out_channels)
    target = torch.cat([weight.reshape(out_channels, -1), bias.double()[:, None]], 1)[kept_out]
    kept_gram = gram[columns][:, columns]
    damping = ridge * float(kept_gram.diagonal().mean()) + 1e-12
    solution = torch.linalg.solve(
        kept_gram + damping * torch.eye(len(columns), dtype=torch.float64), gram[columns] @ target.T
    ).T
    with torch.no_grad():
        layer.weight.copy_(solution[:, :-1].reshape(layer.weight.shape).to(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_(solution[:, -1].to(layer.bias))


def _kept(size: int, removed: Iterable[int]) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[list(removed)] = False
    return mask.nonzero().flatten()
