"""How a trial's plan is scored: prune a copy, recalibrate BatchNorm, measure.

Everything a trial needs that does not depend on its plan is built once per study
(:class:`Evaluator`): the example input, the fixed calibration batches, the
validation batches and the baseline's own metrics, so every trial is scored on
exactly the same images. Scoring after BatchNorm recalibration ranks candidates
far better than accuracy right after pruning (Li et al., "EagleEye", ECCV 2020).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..engine import prunable_groups, prune
from ..errors import AutopruneError
from ..metrics import accuracy, latency_ms, measure
from ..results.record import Plan
from ..settings import SearchSettings
from .recovery import recalibrate_batchnorm

#: Calibration batches whose gradients feed importances registered with ``needs_grads``.
GRADIENT_BATCHES = 4


def calibration_batches(data: Any, count: int, batch_size: int, seed: int) -> list:
    """The fixed training batches every trial recalibrates BatchNorm on.

    The same for the same seed, in any process: the order comes from a seeded
    generator, and random augmentations (which draw from torch's, Python's and
    NumPy's global generators) run under generators seeded from ``seed``, whose
    previous state is restored afterwards.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            loader = DataLoader(data.train, batch_size=batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            return [batch for _, batch in zip(range(count), loader)]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def apply_plan(baseline: nn.Module, example_inputs: Any, plan: Plan, calibration: list) -> nn.Module:
    """Prune a copy of ``baseline`` with ``plan`` and recalibrate its BatchNorm statistics."""
    model = prune(copy.deepcopy(baseline), example_inputs, plan["rates"], importance=plan["methods"],
                  calibration=calibration[:GRADIENT_BATCHES])
    return recalibrate_batchnorm(model, calibration)


@dataclass
class Evaluator:
    """Scores plans against one baseline, on inputs fixed once per study."""

    baseline: nn.Module
    example: torch.Tensor
    timing_input: torch.Tensor
    groups: list[str]
    calibration: list = field(repr=False)
    val_batches: list = field(repr=False)
    with_latency: bool = False
    base: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, model: nn.Module, data: Any, settings: SearchSettings) -> Evaluator:
        """Trace the baseline, draw the calibration batches and measure the baseline."""
        baseline = model.eval()
        device = next(baseline.parameters()).device
        example = data.val[0][0].unsqueeze(0).to(device)
        timing_input = example.expand(settings.latency_batch_size, *example.shape[1:]).contiguous()
        groups = prunable_groups(baseline, example)
        if not groups:
            raise AutopruneError("the model has no prunable channel groups")
        calibration = calibration_batches(data, settings.calibration_batches, settings.batch_size, settings.seed)
        val_batches = list(DataLoader(data.val, batch_size=settings.batch_size))
        evaluator = cls(baseline, example, timing_input, groups, calibration, val_batches,
                        with_latency="latency" in settings.objectives)
        evaluator.base = evaluator.measure(baseline)
        return evaluator

    def measure(self, model: nn.Module) -> dict[str, float]:
        """``accuracy``, ``flops``, ``params`` (and ``latency`` in ms when it is an objective)."""
        metrics: dict[str, float] = {"accuracy": accuracy(model, self.val_batches), **measure(model, self.example)}
        if self.with_latency:
            metrics["latency"] = latency_ms(model, self.timing_input, min_run_time=0.2)
        return metrics

    def evaluate(self, plan: Plan) -> dict[str, float]:
        """The metrics of ``plan``, with ``accuracy_drop`` and the seconds spent pruning and evaluating."""
        start = time.perf_counter()
        pruned = apply_plan(self.baseline, self.example, plan, self.calibration)
        pruned_at = time.perf_counter()
        metrics = self.measure(pruned)
        metrics["accuracy_drop"] = self.base["accuracy"] - metrics["accuracy"]
        metrics["prune_seconds"] = pruned_at - start
        metrics["eval_seconds"] = time.perf_counter() - pruned_at
        return metrics
