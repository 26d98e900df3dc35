"""Robust accuracy: top-1 accuracy on corrupted copies of validation images.

Mean accuracy over common corruptions (Gaussian noise, Gaussian blur, brightness,
contrast, JPEG) at the study's severities, after Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
ICLR 2019. The corrupted images are built once per study from its seed
(:func:`autoprune.corruptions.corrupted_batches`), so every trial sees the same ones.
Which corruptions, severities and images: :class:`RobustnessOptions`, a study's
``[metrics.robust_accuracy]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import autoprune
from autoprune import corruptions
from autoprune.corruptions import corrupted_batches
from autoprune.metrics import accuracy
from autoprune.settings import SearchSettings, int_at_least, non_empty_list_of, setting

#: The corruptions robust_accuracy can apply: those :mod:`autoprune.corruptions` defines.
CORRUPTIONS = tuple(corruptions.CORRUPTIONS)


def _is_severities(v) -> bool:
    return (
        isinstance(v, (list, tuple))
        and len(v) > 0
        and all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 5 for k in v)
    )


@dataclass(frozen=True)
class RobustnessOptions(autoprune.Options):
    """The corrupted images of robust_accuracy (and robust_accuracy_drop)."""

    corruptions: tuple[str, ...] = setting(
        ("gaussian_noise", "gaussian_blur", "brightness", "contrast"),
        rule=non_empty_list_of(CORRUPTIONS),
        doc="the corruptions of robust_accuracy (Hendrycks & Dietterich, ICLR 2019), each at every severity",
    )
    corruption_severities: tuple[int, ...] = setting(
        (3,),
        rule="a non-empty list of integers from 1 to 5",
        check=_is_severities,
        doc="the severities of robust_accuracy's corruptions (ImageNet-C's scale)",
    )
    corruption_images: int = setting(
        1000,
        rule=int_at_least(1),
        doc="validation images robust_accuracy corrupts (the first of the study's fixed order)",
    )


def _batches(context):
    options = context.options("robust_accuracy")
    batch_size = SearchSettings.default("batch_size") if context.settings is None else context.settings.batch_size
    return context.cached(
        ("robustness", options),
        lambda: corrupted_batches(
            context.val_batches,
            options.corruptions,
            options.corruption_severities,
            options.corruption_images,
            context.seed,
            batch_size,
        ),
    )


def robust_accuracy(model, context) -> float:
    """Top-1 accuracy in percent over every corruption and severity of the study's options."""
    return context.of_model(model, "robust_accuracy", lambda: accuracy(model, _batches(context)))


def robust_accuracy_drop(model, context) -> float:
    """Points of robust accuracy lost against the unpruned model (with robust_accuracy's options)."""
    return context.baseline("robust_accuracy") - robust_accuracy(model, context)


@autoprune.hookimpl
def autoprune_register_metrics(register):
    register(
        "robust_accuracy",
        robust_accuracy,
        direction="maximize",
        unit="%",
        description="accuracy on corrupted validation images (Hendrycks & Dietterich, ICLR 2019)",
        options=RobustnessOptions,
    )
    register(
        "robust_accuracy_drop",
        robust_accuracy_drop,
        unit="points",
        description="robust accuracy lost against the baseline (robust_accuracy's options)",
    )
