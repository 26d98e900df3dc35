"""Robust accuracy: top-1 accuracy on corrupted copies of validation images.

Mean accuracy over common corruptions (Gaussian noise, Gaussian blur, brightness,
contrast, JPEG) at the study's severities, after Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
ICLR 2019. The corrupted images are built once per study from its seed
(:func:`autoprune.corruptions.corrupted_batches`), so every trial sees the same ones.
"""

from __future__ import annotations

import autoprune
from autoprune.corruptions import corrupted_batches
from autoprune.metrics import accuracy
from autoprune.settings import SearchSettings


def _batches(context):
    settings = context.settings or SearchSettings(max_accuracy_drop=0.0)
    key = ("robustness", tuple(settings.corruptions), tuple(settings.corruption_severities), settings.corruption_images)
    return context.cached(
        key,
        lambda: corrupted_batches(
            context.val_batches,
            settings.corruptions,
            settings.corruption_severities,
            settings.corruption_images,
            context.seed,
            settings.batch_size,
        ),
    )


def robust_accuracy(model, context) -> float:
    """Top-1 accuracy in percent over every corruption and severity of the study (``search.corruptions``)."""
    return context.of_model(model, "robust_accuracy", lambda: accuracy(model, _batches(context)))


def robust_accuracy_drop(model, context) -> float:
    """Points of robust accuracy lost against the unpruned model."""
    return context.baseline("robust_accuracy") - robust_accuracy(model, context)


@autoprune.hookimpl
def autoprune_register_metrics(register):
    register(
        "robust_accuracy",
        robust_accuracy,
        direction="maximize",
        unit="%",
        description="accuracy on corrupted validation images (Hendrycks & Dietterich, ICLR 2019)",
    )
    register(
        "robust_accuracy_drop",
        robust_accuracy_drop,
        unit="points",
        description="robust accuracy lost against the baseline",
    )
