"""Measures as people read them: ``4.76 MFLOPs``, ``94.2 k params``, ``1.23 ms``, ``2.78x fewer``,
``-0.35 points``, ``54 s``, ``mAP``.

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
#: What a factor reads where ``after`` is the larger: a slower plan is never shown as a speed-up.
OPPOSITE_WORDS = {"fewer": "more", "smaller": "larger", "faster": "slower"}


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
    """How many times smaller ``after`` is: ``2.78x fewer`` (``smaller``, ``faster``); where it is larger, how
    many times larger: ``1.14x slower`` (``more``, ``larger``); ``-`` when unknown."""
    if not before or not after or not math.isfinite(before) or not math.isfinite(after):
        return "-"
    word = FACTOR_WORDS.get(measure, "smaller")
    if after > before and before / after < 0.995:  # shown as 1.00x where it rounds to no change
        return f"{after / before:.2f}x {OPPOSITE_WORDS[word]}"
    return f"{before / after:.2f}x {word}"


def fixed(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, a value that rounds to zero as ``0.00`` (never ``-0.00``)."""
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{value:.{digits}f}"
    return f"{0.0:.{digits}f}" if float(text) == 0 else text


def signed(value: float, digits: int = 2) -> str:
    """``value`` with its sign and ``digits`` decimals: ``+0.35``, ``-0.69``; a change that rounds to
    zero is ``+0.00``, never ``-0.00``."""
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{value:+.{digits}f}"
    return f"{0.0:+.{digits}f}" if float(text) == 0 else text


def change(drop: float, unit: str = "points") -> str:
    """A score's change for a ``drop`` in points (a loss is a negative change): ``-0.35 points``, ``+0.00 pt``."""
    return f"{signed(-drop)} {unit}"


def duration(seconds: float) -> str:
    """A duration as people say it: ``0.4 s``, ``54 s``, ``3.2 min``, ``1.5 h``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 3600 - 3:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plural(count: int, word: str) -> str:
    """``1 trial``, ``3 trials``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


#: How the built-in tasks' scores are written in text (their registered names are lower case).
SCORE_NAMES = {"map": "mAP", "map_50": "mAP@.5", "miou": "mIoU"}


def score_name(name: str) -> str:
    """A score's name as text writes it: ``mAP`` for ``map``, ``mIoU`` for ``miou``, ``accuracy``; a
    plugin's score by its own name."""
    return SCORE_NAMES.get(name, name)


def score_label(name: str, label: str | None = None) -> str:
    """A task's score as figures name it, with its unit: the task's own ``label``, else ``top-1 accuracy, %``
    for accuracy and ``NAME, points`` for another score."""
    return label or ("top-1 accuracy, %" if name == "accuracy" else f"{score_name(name)}, points")


def score(name: str, value: float) -> str:
    """A score as summaries print it: ``93.50 %`` for accuracy, ``41.20`` (points) otherwise."""
    text = fixed(value)
    return f"{text} %" if name == "accuracy" and text != "-" else text
