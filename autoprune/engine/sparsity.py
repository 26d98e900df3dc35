"""Weight sparsity: unstructured and N:M masks on Conv and Linear weights, and what they save.

Channel pruning (:func:`autoprune.prune`) removes whole channels and makes a model
faster on any hardware. Weight pruning zeroes single weights instead:

- **unstructured** (:func:`prune_weights`): the least important fraction of each
  layer's weights, by magnitude unless scores are given (Han et al., "Learning both
  Weights and Connections for Efficient Neural Networks", NeurIPS 2015), which needs sparse kernels or compressed storage
  to pay off;
- **N:M** (:func:`prune_n_m`): in every block of M consecutive weights along the
  input dimension, only the N most important are kept (2:4 by default), the pattern that
  NVIDIA's sparse tensor cores accelerate (Mishra et al., "Accelerating Sparse Deep
  Neural Networks", 2021). A Conv2d weight ``[out, in, kh, kw]`` is grouped over
  ``in`` at each kernel position, as NVIDIA's ASP does; a layer whose input
  dimension is not a multiple of M is left dense and reported.

Masks are PyTorch's own (``torch.nn.utils.prune``): the weight is recomputed from
``weight_orig * weight_mask`` before every forward pass, so fine-tuning keeps the
zeros; :func:`make_permanent` folds them into plain weights for export, and the
exported file keeps the zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from ..errors import PruningError

#: Layers whose weights can be masked.
MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def maskable_layers(model: nn.Module, names: list[str] | None = None) -> dict[str, nn.Module]:
    """``{name: layer}`` of the model's Conv and Linear layers (only those in ``names``, when given)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, MASKABLE)}
    if names is None:
        return layers
    unknown = sorted(set(names) - set(layers))
    if unknown:
        raise PruningError(
            f"no Conv or Linear layer named {', '.join(map(repr, unknown))}; "
            f"maskable layers: {', '.join(layers) or 'none'}"
        )
    return {n: layers[n] for n in names}


def prune_weights(
    model: nn.Module, sparsity: float | dict[str, float], scores: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """Zero the least important ``sparsity`` fraction of each layer's weights (in place, as masks).

    ``sparsity``: one fraction for every Conv and Linear layer, or ``{layer: fraction}``.
    Each layer gets ``round(sparsity * weights)`` zeros. ``scores``: ``{layer: tensor of
    the weight's shape}``, higher means keep (:func:`~autoprune.engine.weight_scores`);
    the weights' magnitude where a layer has none.
    """
    targets = sparsity if isinstance(sparsity, dict) else dict.fromkeys(maskable_layers(model), sparsity)
    for name, layer in maskable_layers(model, list(targets)).items():
        fraction = float(targets[name])
        if not 0.0 <= fraction < 1.0:
            raise PruningError(f"the sparsity of layer {name!r} must be in [0, 1), got {fraction!r}")
        weight = _weight(layer)
        count = round(fraction * weight.numel())
        mask = torch.ones_like(weight, dtype=torch.bool)
        if count:
            order = torch.argsort(_ranking(layer, name, scores).flatten(), stable=True)[:count]
            mask.view(-1)[order] = False
        _set_mask(layer, mask & _mask(layer))
    return model


def prune_n_m(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    layers: list[str] | None = None,
    scores: dict[str, torch.Tensor] | None = None,
) -> list[str]:
    """Keep the ``n`` most important of every ``m`` consecutive input weights in each layer (in place, as masks).

    ``scores`` as for :func:`prune_weights` (magnitude by default). Returns the names
    of the layers left dense because their input dimension is not a multiple of ``m``.
    """
    if not 0 < n < m:
        raise PruningError(f"N:M sparsity needs 0 < N < M, got {n}:{m}")
    skipped = []
    for name, layer in maskable_layers(model, layers).items():
        weight = _weight(layer)
        blocks = _input_last(_ranking(layer, name, scores))
        if blocks.shape[-1] % m:
            skipped.append(name)
            continue
        grouped = blocks.reshape(-1, m)
        keep = torch.zeros_like(grouped, dtype=torch.bool)
        keep.scatter_(1, torch.topk(grouped, n, dim=1, sorted=False).indices, True)
        mask = _input_first(keep.reshape(blocks.shape), weight.shape)
        _set_mask(layer, mask & _mask(layer))
    return skipped


def n_m_violations(model: nn.Module, n: int = 2, m: int = 4, layers: list[str] | None = None) -> dict[str, int]:
    """``{layer: blocks with more than n nonzeros}`` for every layer (of ``layers``, when given) whose
    input dimension is a multiple of m."""
    found = {}
    for name, layer in maskable_layers(model, layers).items():
        blocks = _input_last(_weight(layer))
        if blocks.shape[-1] % m == 0:
            bad = int(((blocks.reshape(-1, m) != 0).sum(1) > n).sum())
            if bad:
                found[name] = bad
    return found


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight (``torch.nn.utils.prune.remove``): plain weights with zeros."""
    for layer in model.modules():
        if torch_prune.is_pruned(layer) and hasattr(layer, "weight_mask"):
            torch_prune.remove(layer, "weight")
    return model


def sparsity_stats(model: nn.Module) -> dict[str, float]:
    """Zeros in the model's weights and what a sparse format would store.

    ``sparsity``: the fraction of Conv and Linear weights that are zero;
    ``nonzero_params``: the parameters that are not zero (all of them counted);
    ``size_bytes``: the model stored with each Conv and Linear weight as a bitmap of
    its nonzeros (one bit per weight) and their 4-byte values, or dense where that is
    smaller, and every other parameter dense (4 bytes each).
    """
    masked_total = masked_zeros = 0
    size = 0.0
    counted = set()
    for layer in maskable_layers(model).values():
        weight = _weight(layer).detach()
        counted.add(id(layer))
        zeros = int((weight == 0).sum())
        masked_total += weight.numel()
        masked_zeros += zeros
        nonzero = weight.numel() - zeros
        size += min(4.0 * weight.numel(), math.ceil(weight.numel() / 8) + 4.0 * nonzero)
    nonzero_params = 0
    for _name, param in _parameters(model):
        nonzero_params += int((param.detach() != 0).sum())
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(module) in counted and name in ("weight", "weight_orig"):
                continue
            size += 4.0 * param.numel()
    return {
        "sparsity": masked_zeros / masked_total if masked_total else 0.0,
        "nonzero_params": nonzero_params,
        "size_bytes": math.ceil(size),
    }


def _parameters(model: nn.Module):
    """The parameters a forward pass uses: a masked weight counts as its masked value."""
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "weight_orig" and hasattr(module, "weight_mask"):
                yield "weight", module.weight
            else:
                yield name, param


def _ranking(layer: nn.Module, name: str, scores: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """What to keep first in ``layer``: its scores (or magnitudes), with weights masked already ranked last."""
    weight = _weight(layer).detach()
    if scores is None or name not in scores:
        return weight.abs()
    ranking = scores[name].detach().to(weight.device, torch.float64)
    if ranking.shape != weight.shape:
        raise PruningError(
            f"the scores of layer {name!r} have shape {tuple(ranking.shape)}; "
            f"expected the weight's {tuple(weight.shape)}"
        )
    return ranking.masked_fill(~_mask(layer), -math.inf)


def _weight(layer: nn.Module) -> torch.Tensor:
    return layer.weight  # the masked weight when a mask is set


def _mask(layer: nn.Module) -> torch.Tensor:
    existing = getattr(layer, "weight_mask", None)
    return torch.ones_like(layer.weight, dtype=torch.bool) if existing is None else existing.bool()


def _set_mask(layer: nn.Module, mask: torch.Tensor) -> None:
    if hasattr(layer, "weight_mask"):
        torch_prune.remove(layer, "weight")  # one mask per layer: fold the old one in, then mask again
    torch_prune.custom_from_mask(layer, "weight", mask)


def _input_last(weight: torch.Tensor) -> torch.Tensor:
    """The weight with its input dimension last: ``[out, in]`` or ``[out, k..., in]`` for convolutions."""
    return weight if weight.dim() == 2 else weight.movedim(1, -1)


def _input_first(blocks: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return blocks if len(shape) == 2 else blocks.movedim(-1, 1)


def held_zeros(model: nn.Module) -> Callable[[int, int], None]:
    """An ``after_step`` for :func:`~autoprune.train` that sets the model's zero Conv and Linear weights back
    to zero after every optimizer step: fine-tuning keeps the sparsity (unstructured or N:M) that weight
    pruning gave the model, as it must for the sparse kernels it is meant for."""
    masks = []
    for layer in model.modules():
        if isinstance(layer, MASKABLE):
            zero = layer.weight.detach() == 0
            if bool(zero.any()):
                masks.append((layer.weight, zero))

    def after_step(step: int, total: int) -> None:
        with torch.no_grad():
            for weight, zero in masks:
                weight.masked_fill_(zero, 0.0)

    return after_step
