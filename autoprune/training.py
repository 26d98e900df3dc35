"""The one training loop: baseline training and fine-tuning, optionally with distillation.

SGD with Nesterov momentum and a cosine learning-rate schedule (Loshchilov &
Hutter, "SGDR", ICLR 2017), over shuffled batches drawn with the given seed.
With a ``teacher``, the loss mixes cross-entropy with the KL divergence to the
teacher's softened outputs (Hinton et al., "Distilling the Knowledge in a Neural
Network", 2015).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .settings import TrainSettings

#: Softmax temperature and weight of the distillation term.
DISTILL_TEMPERATURE = 4.0
DISTILL_WEIGHT = 0.7


def train(model: nn.Module, data, recipe: TrainSettings = TrainSettings(), *, seed: int = 0,
          teacher: nn.Module | None = None, log: Callable[[str], None] | None = None) -> nn.Module:
    """Train ``model`` in place on ``data.train`` with ``recipe``; return it in eval mode.

    Args:
        model: the network (its device is used for the batches).
        data: an object with ``.train`` (a Dataset of ``(input, label)``).
        recipe: epochs, batch size, learning rate, momentum, weight decay.
        seed: seeds the shuffling and anything random in the model (dropout).
        teacher: distil from this model's outputs (it is not trained).
        log: called with one line per epoch (progress and time left).

    The caller's random generator state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(model, data, recipe, seed, teacher, log)


def train_steps(model: nn.Module, batches: list, steps: int, recipe: TrainSettings, *, seed: int = 0) -> nn.Module:
    """``steps`` optimizer steps of ``recipe`` on ``batches`` (cycled, in order); return the model in eval mode.

    The short recovery of iterative pruning: the same step and schedule as :func:`train`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer, schedule = _optimizer(model, recipe, steps)
        device = next(model.parameters()).device
        model.train()
        for step in range(steps):
            inputs, targets = batches[step % len(batches)]
            _step(model, optimizer, schedule, inputs.to(device), targets.to(device), None)
    return model.eval()


def _optimizer(model: nn.Module, recipe: TrainSettings, total_steps: int):
    """SGD (Nesterov momentum with momentum > 0) and a cosine schedule over ``total_steps``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0)
    total = max(1, total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    return optimizer, schedule


def _step(model: nn.Module, optimizer, schedule, inputs: torch.Tensor, targets: torch.Tensor,
          teacher: nn.Module | None) -> None:
    logits = model(inputs)
    loss = F.cross_entropy(logits, targets)
    if teacher is not None:
        loss = (1 - DISTILL_WEIGHT) * loss + DISTILL_WEIGHT * distillation_loss(logits, teacher, inputs)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()


def _train(model: nn.Module, data, recipe: TrainSettings, seed: int, teacher: nn.Module | None,
           log: Callable[[str], None] | None) -> nn.Module:
    device = next(model.parameters()).device
    loader = DataLoader(data.train, batch_size=recipe.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer, schedule = _optimizer(model, recipe, recipe.epochs * len(loader))
    if teacher is not None:
        teacher.eval()
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        for inputs, targets in loader:
            _step(model, optimizer, schedule, inputs.to(device), targets.to(device), teacher)
        if log:
            elapsed = time.perf_counter() - start
            eta = elapsed / (epoch + 1) * (recipe.epochs - epoch - 1)
            log(f"  epoch {epoch + 1}/{recipe.epochs} ({elapsed:.0f}s, ~{eta:.0f}s left)")
    return model.eval()


def distillation_loss(logits: torch.Tensor, teacher: nn.Module, inputs: torch.Tensor,
                      temperature: float = DISTILL_TEMPERATURE) -> torch.Tensor:
    """KL divergence to the teacher's softened outputs, scaled by ``temperature**2`` (Hinton et al., 2015)."""
    with torch.no_grad():
        soft = F.softmax(teacher(inputs) / temperature, dim=1)
    return temperature**2 * F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
