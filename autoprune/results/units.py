"""Measures as people read them: ``4.76 MFLOPs``, ``94.2 k params``, ``1.23 ms``, ``2.78x fewer``.

The summaries, the report and the export table all format through here, so a
number reads the same wherever it is shown.
"""

from __future__ import annotations

import math

#: The unit each measure is counted in; FLOPs and parameters take SI prefixes, sizes binary ones.
UNITS = {"flops": "FLOPs", "params": "params", "nonzero_params": "nonzero params", "size_bytes": "B", "latency": "ms"}
#: Measures where smaller is the point of pruning, so a factor reads "N.NNx fewer" (or "smaller", "faster").
FACTOR_WORDS = {
    "flops": "fewer",
    "params": "fewer",
    "nonzero_params": "fewer",
    "size_bytes": "smaller",
    "latency": "faster",
}


def count(value: float, digits: int = 3) -> str:
    """``value`` with an SI prefix and ``digits`` significant digits: ``4.76 M``, ``94.2 k``, ``512``."""
    if value is None or not math.isfinite(value):
        return "-"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}"
    return f"{value:.{digits}g}" if value != int(value) else f"{int(value)}"


def size(value: float) -> str:
    """A size in bytes with a binary prefix: ``183 KiB``, ``1.50 MiB``."""
    if value is None or not math.isfinite(value):
        return "-"
    for prefix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}"
    return f"{value:.0f} B"


def human(value: float | None, measure: str) -> str:
    """``value`` of ``measure`` in human units: ``4.76 MFLOPs``, ``94.2 k params``, ``1.23 ms``, ``183 KiB``."""
    if value is None or not math.isfinite(value):
        return "-"
    if measure == "size_bytes":
        return size(value)
    if measure == "latency":
        return f"{value:.3g} ms"
    if measure == "flops":  # "4.76 MFLOPs", "512 FLOPs"
        text = count(value)
        return f"{text}FLOPs" if text[-1].isalpha() else f"{text} FLOPs"
    unit = UNITS.get(measure)
    return f"{count(value)} {unit}" if unit else count(value)


def factor(before: float | None, after: float | None, measure: str = "flops") -> str:
    """How many times smaller ``after`` is: ``2.78x fewer`` (``smaller``, ``faster``); ``-`` when unknown."""
    if not before or not after or not math.isfinite(before) or not math.isfinite(after):
        return "-"
    return f"{before / after:.2f}x {FACTOR_WORDS.get(measure, 'smaller')}"


def score_label(name: str, label: str | None = None) -> str:
    """A task's score as figures name it, with its unit: the task's own ``label``, else ``top-1 accuracy, %``
    for accuracy and ``NAME, points`` for another score."""
    return label or ("top-1 accuracy, %" if name == "accuracy" else f"{name}, points")


def score(name: str, value: float) -> str:
    """A score as summaries print it: ``93.50 %`` for accuracy, ``41.20`` (points) otherwise."""
    return f"{value:.2f} %" if name == "accuracy" else f"{value:.2f}"
