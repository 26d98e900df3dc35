"""Every torchvision classification model, as ``torchvision/<name>``.

The factories build the model with ``weights=None`` (random initialization) by
default; ``weights="DEFAULT"`` (or any torchvision weights name) downloads the
pretrained weights through torchvision as usual. The classifier is sized to
``num_classes`` and the stem to ``in_channels``; any other keyword goes to the
torchvision builder (for example ``image_size=64`` for ViT).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torchvision
from torch import nn

import autoprune

# Builders whose auxiliary classifiers only run in training mode: a pruned model
# would keep them at their old width, so they are off unless asked for.
_NO_AUX = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _adapt_stem(model: nn.Module, in_channels: int) -> None:
    """Give the first convolution that reads RGB ``in_channels`` inputs instead."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            new = nn.Conv2d(
                in_channels,
                m.out_channels,
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                m.groups,
                m.bias is not None,
                m.padding_mode,
            )
            with torch.no_grad():  # keep pretrained filters: average over RGB, then repeat
                mean = m.weight.mean(1, keepdim=True)
                new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * 3 / in_channels)
                if m.bias is not None:
                    new.bias.copy_(m.bias)
            _replace(model, name, new)
            return
    raise autoprune.AutopruneError("found no 3-channel input convolution to adapt to in_channels")


def _resize_head(model: nn.Module, num_classes: int, old: int = 1000) -> None:
    """Replace the last layer with ``old`` outputs by one with ``num_classes``."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == old:
            last = (name, nn.Linear(m.in_features, num_classes, m.bias is not None))
        elif isinstance(m, nn.Conv2d) and m.out_channels == old:
            last = (name, nn.Conv2d(m.in_channels, num_classes, m.kernel_size, m.stride, m.padding))
    if last is None:
        raise autoprune.AutopruneError(f"found no {old}-way classifier to resize")
    _replace(model, *last)


def build(name: str, num_classes: int = 1000, in_channels: int = 3, weights: Any = None, **params: Any) -> nn.Module:
    """Build torchvision model ``name`` for ``num_classes`` classes and ``in_channels`` inputs."""
    builder = torchvision.models.get_model_builder(name)
    params = {**_NO_AUX.get(name, {}), **params}
    if weights is None:
        model = builder(weights=None, num_classes=num_classes, **params)
    else:
        params.pop("init_weights", None)
        model = builder(weights=weights, **params)
        if num_classes != 1000:
            _resize_head(model, num_classes)
    if in_channels != 3:
        _adapt_stem(model, in_channels)
    return model


def classification_models() -> list[str]:
    """Names of torchvision's image classification models."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


@autoprune.hookimpl
def autoprune_register_models(register):
    for name in classification_models():
        register(
            f"torchvision/{name}",
            partial(build, name),
            description=f"torchvision.models.{name} (weights=None unless weights= is given)",
        )
