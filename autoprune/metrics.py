"""Model measurements: FLOPs, parameters, top-1 accuracy and latency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .engine import call_model


def count_flops(model: nn.Module, example_inputs: Any) -> int:
    """FLOPs of one forward pass on ``example_inputs`` (a multiply-add counts as 2).

    Counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which
    sees every matrix multiplication and convolution the forward pass runs,
    attention included.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call_model(model, example_inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def measure(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """``{"flops": ..., "params": ...}`` of ``model`` on ``example_inputs``."""
    return {"flops": count_flops(model, example_inputs), "params": count_params(model)}


def count_correct(model: nn.Module, batches, stop: Callable[[int, int], bool] | None = None) -> tuple[int, int]:
    """Top-1 correct predictions and samples seen over ``(inputs, targets)`` batches, in eval mode.

    ``stop(correct, seen)`` is asked after every batch; when it answers True the
    count ends there (an evaluation that can no longer change its verdict).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = seen = 0
    try:
        with torch.inference_mode():
            for inputs, targets in batches:
                predictions = model(inputs.to(device)).argmax(1).cpu()
                correct += int((predictions == targets).sum())
                seen += len(targets)
                if stop is not None and stop(correct, seen):
                    break
    finally:
        model.train(was_training)
    return correct, seen


def accuracy(model: nn.Module, batches) -> float:
    """Top-1 accuracy in percent over ``(inputs, targets)`` batches, in eval mode."""
    correct, total = count_correct(model, batches)
    if total == 0:
        raise ValueError("accuracy() got no samples")
    return 100.0 * correct / total


def latency_ms(model: nn.Module, example: torch.Tensor, min_run_time: float = 0.5) -> float:
    """Median milliseconds of one forward pass on ``example``, timed by ``torch.utils.benchmark``."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on CPU hosts
    from torch.utils import benchmark  # imported here: it loads the C++ extension machinery

    model.eval()
    with torch.no_grad():
        timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": example})
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3
