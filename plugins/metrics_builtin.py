"""The built-in metrics, registered through the same hook as any plugin's.

The search measures ``accuracy`` and ``accuracy_drop`` itself, batch by batch with
early stopping against the budget; the functions here give the same numbers on a
full count, for reports and for plugins that build on them (``context.baseline``).
"""

from __future__ import annotations

import autoprune
from autoprune.engine import sparsity_stats
from autoprune.metrics import accuracy as top1_accuracy
from autoprune.metrics import count_flops, count_params
from autoprune.runtimes import Runtime, time_ms


def flops(model, context) -> float:
    """FLOPs of one forward pass on one input, counted by PyTorch's ``FlopCounterMode``."""
    return count_flops(model, context.example)


def params(model, context) -> float:
    """Parameters, shared ones counted once."""
    return count_params(model)


def latency(model, context) -> float:
    """Milliseconds of a forward pass on the study's latency batch: the study's latency table's
    prediction for the candidate's plan (NetAdapt, ECCV 2018) in a search, else the fastest block of
    timed passes in the study's runtime (``latency_backend`` on ``latency_device``; PyTorch on the CPU
    without settings)."""
    if context.predict_latency is not None and context.plan is not None:
        return context.predict_latency(context.plan)
    runtime = Runtime.of(context.settings) if context.settings is not None else Runtime()
    return time_ms(model, context.timing_input, runtime)


def accuracy(model, context) -> float:
    """The task's score in points on the validation batches: top-1 accuracy in percent for classification."""
    if context.task is not None:
        return context.task.score(model, context.val_batches)
    return top1_accuracy(model, context.val_batches)


def accuracy_drop(model, context) -> float:
    """Points of top-1 accuracy lost against the unpruned model."""
    return context.baseline("accuracy") - accuracy(model, context)


def _weight_counts(model, context) -> dict:
    return context.of_model(model, "sparsity_stats", lambda: sparsity_stats(model))


def sparsity(model, context) -> float:
    """The fraction of Conv and Linear weights that are zero."""
    return _weight_counts(model, context)["sparsity"]


def nonzero_params(model, context) -> float:
    """Parameters that are not zero."""
    return _weight_counts(model, context)["nonzero_params"]


def size_bytes(model, context) -> float:
    """Bytes of the model stored with a bitmap of each weight's nonzeros (dense where smaller)."""
    return _weight_counts(model, context)["size_bytes"]


@autoprune.hookimpl
def autoprune_register_metrics(register):
    register("accuracy", accuracy, direction="maximize", unit="%", description="top-1 validation accuracy")
    register(
        "accuracy_drop",
        accuracy_drop,
        unit="points",
        description="top-1 accuracy lost against the baseline (the study's budget)",
    )
    register("flops", flops, unit="FLOPs", description="FLOPs of one forward pass (torch FlopCounterMode)")
    register("params", params, unit="parameters", description="parameter count")
    register("latency", latency, unit="ms", description="median forward time on the latency batch")
    register(
        "sparsity",
        sparsity,
        direction="maximize",
        unit="fraction",
        description="zero fraction of Conv and Linear weights",
    )
    register("nonzero_params", nonzero_params, unit="parameters", description="parameters that are not zero")
    register("size_bytes", size_bytes, unit="bytes", description="size stored with a bitmap of nonzeros")
