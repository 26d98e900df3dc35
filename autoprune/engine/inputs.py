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


def input_shape(inputs: Any) -> tuple[int, list[int]]:
    """``(batch size, shape of one sample)`` of model inputs: a batch tensor, or a list of images
    (torchvision's detectors) alone or as the one argument of a tuple."""
    if isinstance(inputs, tuple) and len(inputs) == 1 and isinstance(inputs[0], list):
        inputs = inputs[0]
    if isinstance(inputs, list):
        return len(inputs), list(inputs[0].shape)
    return int(inputs.shape[0]), list(inputs.shape[1:])


def move_to(inputs: Any, device: torch.device | str) -> Any:
    """``inputs`` (a tensor, or a list or tuple of them) on ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(move_to(x, device) for x in inputs)
    return inputs
