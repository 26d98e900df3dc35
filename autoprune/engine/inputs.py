"""Calling a model on example inputs that may be a tensor, a tuple of arguments or keyword arguments."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """``model(**inputs)`` for a dict, ``model(*inputs)`` for a tuple or list, else ``model(inputs)``."""
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def call_network(model: nn.Module, example_inputs: Any) -> Any:
    """The model's network on ``example_inputs``: its raw outputs, without a detector's post-processing.

    For torchvision's detectors, the transform, backbone and heads (whose outputs have
    fixed shapes); for every other model, the same as :func:`call_model`.
    """
    from .adapters import network_forward

    forward = network_forward(model)
    return call_model(model, example_inputs) if forward is None else forward(model, example_inputs)


def output_shapes(model: nn.Module, example_inputs: Any) -> list[tuple[int, ...]]:
    """The shape of every tensor the model's network returns (:func:`call_network`), flattened in order."""
    with torch.no_grad():
        out = call_network(model, example_inputs)
    return [tuple(t.shape) for t in tp.utils.flatten_as_list(out)]
