"""The one training loop: baseline training and fine-tuning, optionally with distillation.

SGD with Nesterov momentum (or AdamW) and a cosine learning-rate schedule
(Loshchilov & Hutter, "SGDR", ICLR 2017), after an optional linear warm-up and with
optional gradient-norm clipping, over shuffled batches drawn with the given seed.
The loss is the task's (:mod:`autoprune.tasks`: cross-entropy for classification,
the detector's own losses, per-pixel cross-entropy). With a ``teacher``, the loss
of a classifier mixes cross-entropy with the KL divergence to the
teacher's softened outputs (Hinton et al., "Distilling the Knowledge in a Neural
Network", 2015).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .engine.inputs import move_to
from .errors import AutopruneError
from .precision import autocast, grad_scaler
from .settings import TrainSettings
from .tasks import Task

#: Softmax temperature and weight of the distillation term.
DISTILL_TEMPERATURE = 4.0
DISTILL_WEIGHT = 0.7


class WithoutEpochLines:
    """A log that takes one-off messages but not :func:`train`'s line per epoch (``autoprune search --quiet``):
    callers that pass one log down to training (the baseline's) keep their own lines and lose the epochs'."""

    epoch_lines = False

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def __call__(self, message: str) -> None:
        self.log(message)


def train(
    model: nn.Module,
    data,
    recipe: TrainSettings = TrainSettings(),
    *,
    seed: int = 0,
    teacher: nn.Module | None = None,
    log: Callable[[str], None] | None = None,
    task: Any = None,
    amp: str = "off",
    after_step: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``data.train`` with ``recipe``; return it in eval mode.

    Args:
        model: the network (its device is used for the batches).
        data: an object with ``.train`` (a Dataset of ``(input, target)``) and
            ``.num_classes``, and optionally ``.task``.
        recipe: epochs, batch size, learning rate, momentum, weight decay.
        seed: seeds the shuffling and anything random in the model (dropout).
        teacher: distil from this model's outputs (it is not trained; classification only).
        log: called with one line per epoch (progress and time left), unless it is a
            :class:`WithoutEpochLines`.
        task: the :class:`~autoprune.Task` whose batches and loss train the model;
            by default the one the dataset names (classification when it names none).
        amp: ``"bf16"`` or ``"fp16"``: forward passes and the loss under autocast (float16 with a
            scaled loss), as :mod:`autoprune.precision` says; ``"off"``: float32.
        after_step: called as ``after_step(step, total)`` after every optimizer step (``step`` from 1 to
            ``total``), in training mode: elastic pruning's masks (:mod:`autoprune.plan.elastic`).

    The caller's random generator state is left as it was.
    """
    task = task if task is not None else _task_of(data)
    if teacher is not None and not task.distillable:
        raise AutopruneError(f"distillation matches class probabilities; the {task.name!r} task has none to match")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(model, data, recipe, seed, teacher, log, task, amp, after_step)


def train_steps(
    model: nn.Module, batches: list, steps: int, recipe: TrainSettings, *, seed: int = 0, task: Any = None
) -> nn.Module:
    """``steps`` optimizer steps of ``recipe`` on ``batches`` (cycled, in order); return the model in eval mode.

    The short recovery of iterative pruning: the same step and schedule as :func:`train`,
    with ``task``'s loss (classification's cross-entropy by default).
    """
    task = task if task is not None else Task(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer, schedule = _optimizer(model, recipe, steps)
        model.train()
        for step in range(steps):
            inputs, targets = batches[step % len(batches)]
            _step(model, (optimizer, schedule, grad_scaler(model)), inputs, targets, None, task, recipe.clip_grad_norm)
    return model.eval()


def _task_of(data: Any) -> Any:
    from .zoo import dataset_task

    return dataset_task(data)


def _optimizer(model: nn.Module, recipe: TrainSettings, total_steps: int, steps_per_epoch: int = 1):
    """SGD (Nesterov momentum with momentum > 0) or AdamW, a linear warm-up over ``recipe.warmup_epochs``
    and a cosine decay to 0 over the rest of ``total_steps``."""
    if recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.momentum > 0,
        )
    total = max(1, total_steps)
    warmup = min(total - 1, round(recipe.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, schedule


def _step(
    model: nn.Module,
    stepping: tuple,
    inputs: Any,
    targets: Any,
    teacher: nn.Module | None,
    task: Any,
    clip: float = 0.0,
    amp: str = "off",
) -> None:
    """One optimizer step; ``stepping``: the optimizer, its schedule and the loss scaler (:func:`grad_scaler`)."""
    optimizer, schedule, scaler = stepping
    device = next(model.parameters()).device
    inputs = move_to(inputs, device)
    targets = targets.to(device) if isinstance(targets, torch.Tensor) else targets
    with autocast(model, amp):
        if teacher is None:
            loss = task.loss(model, inputs, targets)
        else:
            logits = model(inputs)
            loss = (1 - DISTILL_WEIGHT) * F.cross_entropy(logits, targets) + DISTILL_WEIGHT * distillation_loss(
                logits, teacher, inputs
            )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
    schedule.step()


def _train(
    model: nn.Module,
    data,
    recipe: TrainSettings,
    seed: int,
    teacher: nn.Module | None,
    log: Callable[[str], None] | None,
    task: Any,
    amp: str = "off",
    after_step: Callable[[int, int], None] | None = None,
) -> nn.Module:
    for _ in _training(model, data, recipe, seed, teacher, log, task, amp, stops=(), after_step=after_step):
        pass
    return model.eval()


def train_rungs(
    model: nn.Module,
    data,
    recipe: TrainSettings,
    fractions: tuple[float, ...],
    *,
    seed: int = 0,
    task: Any = None,
    amp: str = "off",
    after_step: Callable[[int, int], None] | None = None,
) -> Iterator[float]:
    """Train ``model`` in place with ``recipe``, pausing at each of ``fractions`` of its steps.

    One run of :func:`train` (the same batches, schedule and final weights), which yields the epochs
    trained so far, with the model in eval mode, once it has taken ``fraction`` of the recipe's steps
    (at least one step for the first): the rungs a fine-tuned budget scores a plan at. Stopping the
    iteration early stops the training there. ``after_step`` is :func:`train`'s.
    """
    task = task if task is not None else _task_of(data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield from _training(
            model, data, recipe, seed, None, None, task, amp, stops=tuple(fractions), after_step=after_step
        )


def _training(
    model: nn.Module,
    data,
    recipe: TrainSettings,
    seed: int,
    teacher: nn.Module | None,
    log: Callable[[str], None] | None,
    task: Any,
    amp: str,
    stops: tuple[float, ...],
    after_step: Callable[[int, int], None] | None = None,
) -> Iterator[float]:
    """The training loop; after the step that completes each of ``stops`` (fractions of all steps), the
    model in eval mode and the epochs trained so far are yielded, then training goes on. ``after_step(step,
    total)`` runs after every step, before a rung is yielded."""
    loader = DataLoader(
        data.train,
        batch_size=recipe.batch_size,
        shuffle=True,
        collate_fn=task.collate,
        generator=torch.Generator().manual_seed(seed),
    )
    per_epoch = len(loader)
    total = recipe.epochs * per_epoch
    optimizer, schedule = _optimizer(model, recipe, total, per_epoch)
    stepping = (optimizer, schedule, grad_scaler(model, amp))
    marks = [max(1, min(total, round(f * total))) for f in stops]
    if teacher is not None:
        teacher.eval()
    start, step = time.perf_counter(), 0
    for epoch in range(recipe.epochs):
        model.train()
        for inputs, targets in loader:
            _step(model, stepping, inputs, targets, teacher, task, recipe.clip_grad_norm, amp)
            step += 1
            if after_step is not None:
                after_step(step, total)
            while marks and marks[0] == step:
                marks.pop(0)
                model.eval()
                state = torch.get_rng_state()  # whatever the caller draws at a rung leaves training as it was
                yield step / per_epoch
                torch.set_rng_state(state)
                model.train()
        if log and getattr(log, "epoch_lines", True):
            elapsed = time.perf_counter() - start
            eta = elapsed / (epoch + 1) * (recipe.epochs - epoch - 1)
            log(f"  epoch {epoch + 1}/{recipe.epochs} ({elapsed:.0f}s, ~{eta:.0f}s left)")
    model.eval()


def distillation_loss(
    logits: torch.Tensor, teacher: nn.Module, inputs: torch.Tensor, temperature: float = DISTILL_TEMPERATURE
) -> torch.Tensor:
    """KL divergence to the teacher's softened outputs, scaled by ``temperature**2`` (Hinton et al., 2015)."""
    with torch.no_grad():
        soft = F.softmax(teacher(inputs) / temperature, dim=1)
    return temperature**2 * F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
