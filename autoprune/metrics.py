"""Model measurements: FLOPs, parameters, top-1 accuracy and latency, and the context metrics get.

Every metric a search can use (an objective, a constraint, a report column) is
registered through the ``autoprune_register_metrics`` hook, the built-in ones
included (``autoprune_plugins.metrics_builtin``); :func:`measure_metrics` measures
the named ones on a candidate, with a :class:`MetricContext` built once per study.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .engine import call_model, call_network
from .errors import AutopruneError, PluginError
from .settings import options_class
from .zoo import get_metric


def count_flops(model: nn.Module, example_inputs: Any) -> int:
    """FLOPs of one forward pass on ``example_inputs`` (a multiply-add counts as 2).

    Counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which
    sees every matrix multiplication and convolution the forward pass runs,
    attention included. For a torchvision detector, the network's (transform,
    backbone and heads; :func:`~autoprune.engine.call_network`), which do not
    depend on how many objects it finds.
    """
    was_training = model.training
    # The counter's module tracker hooks every tensor that requires gradients; under no_grad a parameter
    # handed to a submodule as it is (CaiT's class token) has no gradient function and fails it.
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    try:
        for param in trainable:
            param.requires_grad_(False)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call_network(model, example_inputs)
    finally:
        for param in trainable:
            param.requires_grad_(True)
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


def latency_ms(model: nn.Module, example: torch.Tensor, min_run_time: float = 0.5, statistic: str = "median") -> float:
    """Milliseconds of one forward pass on ``example``, timed by ``torch.utils.benchmark``: the median of
    its timed blocks, or their minimum (``statistic="min"``, the least disturbed by other processes)."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on CPU hosts
    from torch.utils import benchmark  # imported here: it loads the C++ extension machinery

    model.eval()
    with torch.no_grad():
        timer = benchmark.Timer(
            stmt="call_model(model, x)", globals={"model": model, "x": example, "call_model": call_model}
        )
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
        return (min(measurement.times) if statistic == "min" else measurement.median) * 1e3


@dataclass
class MetricContext:
    """What a metric may use besides the candidate model, fixed once per study.

    ``example``: one input (batch of 1); ``timing_input``: the batch latency is timed
    on; ``val_batches``: the validation ``(inputs, targets)`` batches, in the study's
    fixed order (iterate them; each pass reads them again unless they fit in memory,
    :class:`autoprune.batches.ValidationBatches`); ``calibration``: the training batches BatchNorm is recalibrated on;
    ``seed``: the study's seed (draw any randomness from it);
    ``baseline_model``: the unpruned model (:meth:`baseline` gives any metric of it);
    ``settings``: the study's :class:`~autoprune.SearchSettings` (None outside a search),
    whose metric options :meth:`options` gives;
    ``plan``: the plan of the candidate being measured (None outside a search);
    ``predict_latency``: ``plan -> ms`` from the study's latency table, when it has one;
    ``task``: the dataset's :class:`~autoprune.Task` (None: classification).
    """

    example: Any
    timing_input: Any
    val_batches: Iterable = field(repr=False)
    seed: int = 0
    baseline_model: nn.Module | None = field(default=None, repr=False)
    calibration: list = field(default_factory=list, repr=False)
    settings: Any = field(default=None, repr=False)
    plan: dict | None = field(default=None, repr=False)
    predict_latency: Callable[[dict], float] | None = field(default=None, repr=False)
    task: Any = field(default=None, repr=False)
    _baseline: dict[str, float] = field(default_factory=dict, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _per_model: dict[tuple[int, Hashable], Any] = field(default_factory=dict, repr=False)
    _depth: int = field(default=0, repr=False)

    def baseline(self, name: str) -> float:
        """Metric ``name`` of the unpruned model, measured once and cached."""
        if name not in self._baseline:
            if self.baseline_model is None:
                raise AutopruneError(f"metric {name!r} of the baseline was asked for, but the context has no baseline")
            self._baseline[name] = measure_metrics(self.baseline_model, [name], self)[name]
        return self._baseline[name]

    def options(self, metric: str) -> Any:
        """The :class:`~autoprune.Options` registered metric ``metric`` declares: the study's
        ``[metrics.<metric>]``, or their defaults (outside a search, or when the study gives none)."""
        return options_class(metric)() if self.settings is None else self.settings.options_of(metric)

    def remember_baseline(self, values: dict[str, float]) -> None:
        """Metrics of the unpruned model measured elsewhere (the search's own count of its accuracy)."""
        self._baseline.update(values)

    def cached(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()`` once per study under ``key`` (a corrupted validation set, a latency table)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def of_model(self, model: nn.Module, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()`` once per model and ``key`` while one :func:`measure_metrics` call lasts: a measurement
        that several metrics share (the weight counts behind sparsity and size, robust accuracy and its drop)."""
        slot = (id(model), key)
        if slot not in self._per_model:
            self._per_model[slot] = build()
        return self._per_model[slot]


def measure_metrics(model: nn.Module, names: Iterable[str], context: MetricContext) -> dict[str, float]:
    """``{name: value}`` of the registered metrics ``names`` on ``model``, each checked to be a finite number."""
    values = {}
    was_training = model.training
    model.eval()
    context._depth += 1
    try:
        for name in names:
            entry = get_metric(name)
            try:
                value = entry.obj(model, context)
            except AutopruneError:
                raise
            except Exception as exc:  # a third party's bug: name it, keep the cause for --debug
                raise PluginError(f"metric {name!r} raised {type(exc).__name__}: {exc}") from exc
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PluginError(f"metric {name!r} returned {value!r}; it must return a finite number")
            values[name] = value
    finally:
        model.train(was_training)
        context._depth -= 1
        if context._depth == 0:  # a model may change before it is measured again
            context._per_model.clear()
    return values


def metric_direction(name: str) -> str:
    """``"minimize"`` or ``"maximize"``: which way metric ``name`` is better."""
    return get_metric(name).options.get("direction", "minimize")
