"""What a study's bounds can mean, known before any training: constraints no plan can meet, and an
accuracy budget finer than the validation split can resolve.

A ``[constraints]`` bound beyond the range of its metric's unit (a negative parameter count, an accuracy
above 100 %) is never met, and neither is a FLOPs or parameter bound below what the most pruned plan
keeps (every searched group at ``rate_max``): both depend on the widths alone, not on the weights, so
the untrained model gives them exactly (:func:`check_bounds`).

On a top-1 task with N validation images, one image is 100 / N points, and a budget of a few images
selects plans on noise (scikit-learn's digits: 288 images, one is 0.35 points; the quickstart's chosen
plan lost 0.69 points on validation and 1.68 on test). :func:`resolution_warning` says so below
:data:`MIN_BUDGET_IMAGES` images' worth.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..engine import prune
from ..errors import AutopruneError, PruningError
from ..metrics import count_flops, count_params, metric_direction
from ..settings import SearchSettings
from ..zoo import get_metric

#: The values a metric registered with one of these units can take (``register(..., unit=...)``).
UNIT_RANGES = {
    "FLOPs": (0.0, math.inf),
    "parameters": (0.0, math.inf),
    "bytes": (0.0, math.inf),
    "ms": (0.0, math.inf),
    "%": (0.0, 100.0),
    "fraction": (0.0, 1.0),
}
#: The fewest validation images an accuracy budget should be worth, below which the search is warned.
MIN_BUDGET_IMAGES = 3


def check_bounds(settings: SearchSettings, model: nn.Module, example: Any, groups: Sequence[str]) -> None:
    """Refuse a ``[constraints]`` bound that no plan of the study can meet (see the module).

    ``model``: the study's model, trained or not; ``example``: its example input; ``groups``: the
    searched groups.
    """
    for name, bound in settings.bounds.items():
        unit = get_metric(name).options.get("unit", "")
        low, high = UNIT_RANGES.get(unit, (-math.inf, math.inf))
        minimize = metric_direction(name) == "minimize"
        if (minimize and bound < low) or (not minimize and bound > high):
            side = f"never below {low:g}" if minimize else f"never above {high:g}"
            what = "the most" if minimize else "the least"
            raise AutopruneError(
                f"constraints.{name} = {bound:g} cannot be met: {name} ({unit}) is {side}, and a bound on a metric "
                f"to {metric_direction(name)} is {what} a plan may have"
            )
    counted = {"flops": lambda m: count_flops(m, example), "params": count_params}
    bounded = [n for n in counted if n in settings.bounds and metric_direction(n) == "minimize"]
    if not bounded:
        return
    smallest = _most_pruned(settings, model, example, groups)
    if smallest is None:
        return
    channels = "channel" in settings.granularities
    plan = (
        f"the most pruned plan (every searched group at rate_max = {settings.rate_max:g})"
        if channels
        else f"a plan of granularity {settings.granularity!r} (it zeroes weights, removes none)"
    )
    for name in bounded:
        least, bound = counted[name](smallest), settings.bounds[name]
        if bound < least:
            unit = get_metric(name).options.get("unit", "")
            raise AutopruneError(
                f"constraints.{name} = {bound:g} cannot be met: {plan} still has {least:,} {unit} (the model: "
                f"{counted[name](model):,}); give a bound of at least {least:,}"
                + (" or a higher search.rate_max" if channels else " or prune channels (search.granularity)")
            )


def _most_pruned(settings: SearchSettings, model: nn.Module, example: Any, groups: Sequence[str]) -> nn.Module | None:
    """A copy of ``model`` with every searched group at ``rate_max`` (its widths are those of the study's
    most pruned plan, whichever channels go), or ``model`` itself when no channels are searched; None
    when such a plan cannot be pruned (its trials will say so)."""
    if "channel" not in settings.granularities or settings.rate_max == 0:
        return model
    round_to, round_min = settings.channel_rounding
    try:
        return prune(
            copy.deepcopy(model).eval(),
            example,
            dict.fromkeys(groups, settings.rate_max),
            round_to=round_to,
            round_min=round_min,
        )
    except PruningError:
        return None


def resolution_warning(settings: SearchSettings, countable: bool, val_images: int) -> str | None:
    """One line when ``max_accuracy_drop`` is worth fewer than :data:`MIN_BUDGET_IMAGES` of the
    ``val_images`` validation images of a top-1 (``countable``) task, else None."""
    if not countable or val_images <= 0:
        return None
    drop, per_image = settings.max_accuracy_drop, 100.0 / val_images
    images = drop / per_image
    if images >= MIN_BUDGET_IMAGES - 1e-9:
        return None
    enough = math.ceil(MIN_BUDGET_IMAGES * per_image * 100 - 1e-6) / 100  # rounded up: it allows the images
    points = "point" if drop == 1 else "points"
    needs = (
        f"needs {math.ceil(MIN_BUDGET_IMAGES * 100 / drop - 1e-9):,} or more validation images (or a budget of "
        f"{enough:g} points)"
        if drop > 0
        else f"is a budget of {enough:g} points"
    )
    return (
        f"max_accuracy_drop = {drop:g} {points} is {images:.2g} validation images of {val_images:,} (one image is "
        f"{per_image:.2g} points): one image more or less decides which plans are feasible; a budget of at least "
        f"{MIN_BUDGET_IMAGES} images' worth {needs}"
    )
