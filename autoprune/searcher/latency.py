"""A per-group latency table, measured once per study: a trial's latency is a lookup, not a timing.

Timing every candidate on a busy machine is noisy (a few percent to tens of percent
between runs), and FLOPs are a poor guide to latency. After NetAdapt (Yang et al.,
"NetAdapt: Platform-Aware Neural Network Adaptation for Mobile Applications", ECCV
2018), which predicts a network's latency from per-layer measurements, autoprune
prunes each group alone at a few rates, and all of them at once at the same rates,
times the whole model each time in the study's runtime (:class:`~autoprune.runtimes.Runtime`:
``latency_backend`` on ``latency_device``, ``latency_threads``) at its latency batch, and
predicts a plan's latency from the groups' measured speed-ups, combined with an
exponent fitted on the uniform plans (:meth:`LatencyTable.predict`), since groups
interact (a layer's time depends on both its input and output widths). The search
checks the prediction against real timings of its best plans (:func:`check_table`)
and the report prints the error.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import input_shape, prune
from ..errors import AutopruneError
from ..files import atomic_write_text
from ..metrics import count_flops
from ..runtimes import BACKENDS, PYTORCH_CPU, Runtime, time_ms

#: What a latency table file holds (``autoprune latency-table``).
TABLE_FORMAT = "autoprune-latency-table-v1"
#: Rates each group is timed at, from 0 to the study's ``rate_max``; rounds of timing (the fastest counts).
TABLE_POINTS = 5
TABLE_ROUNDS = 3
_logger = logging.getLogger(__name__)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


#: What a table file must hold: each field and whether a value fits it.
_TABLE_FIELDS = {
    "base_ms": _positive,
    "rates": lambda v: isinstance(v, list) and len(v) > 0 and all(_number(r) and 0 <= r < 1 for r in v),
    "ms": lambda v: (
        isinstance(v, dict) and all(isinstance(row, list) and all(map(_positive, row)) for row in v.values())
    ),
    "uniform_ms": lambda v: isinstance(v, list) and all(map(_positive, v)),
    "device": lambda v: v in ("cpu", "cuda"),
    "batch_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "input_shape": lambda v: isinstance(v, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in v),
}
#: Fields a table written before they existed may lack (its defaults hold for it), and what fits them.
_OPTIONAL_FIELDS = {
    "backend": lambda v: v in BACKENDS,
    "threads": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
}
#: The range the fitted interaction exponent is held to: one noisy timing of the uniform plans (or a group
#: whose own speed-up is all but nil) cannot turn a prediction into a power of its error.
EXPONENT_RANGE = (0.5, 2.0)


@dataclass
class LatencyTable:
    """Milliseconds of the baseline (``base_ms``), of the baseline with one group pruned at each of ``rates``
    (``ms``), and with every group pruned at each of them (``uniform_ms``)."""

    base_ms: float
    rates: list[float]
    ms: dict[str, list[float]]
    uniform_ms: list[float]
    device: str
    batch_size: int
    input_shape: list[int]
    backend: str = "torch"
    threads: int = 0
    machine: str = field(default_factory=platform.node)
    format: str = TABLE_FORMAT

    @property
    def runtime(self) -> Runtime:
        """The runtime the table was timed in."""
        return Runtime(self.backend, self.device, self.threads)

    def predict(self, rates: dict[str, float]) -> float:
        """The predicted milliseconds of a plan's per-group rates (groups not named keep every channel).

        Each pruned group's measured speed-up ``f_g`` (linear between table rates) is
        combined as ``base * (prod f_g) ** a``, where ``a`` corrects for how the
        groups interact: it is fitted so that the uniform plans (every group at one
        rate, also timed) are predicted exactly, and taken at the plan's mean rate.

        Kept sane when a timing was disturbed: each row is made monotone (pruning
        more of a group is never predicted slower than pruning less, nor slower than
        the baseline), ``a`` is held to :data:`EXPONENT_RANGE`, and a rate beyond
        the table takes its last column (no extrapolation).
        """
        rows = self._monotone_rows
        log_speedup = sum(
            math.log(float(np.interp(rate, self.rates, rows[group])) / self.base_ms)
            for group, rate in rates.items()
            if rate > 0
        )
        mean_rate = sum(rates.values()) / len(self.ms) if self.ms else 0.0
        return self.base_ms * math.exp(self._interaction(mean_rate) * log_speedup)

    @functools.cached_property
    def _monotone_rows(self) -> dict[str, list[float]]:
        """Each group's row made monotone (:meth:`_monotone`), once per table."""
        return {group: self._monotone(row) for group, row in self.ms.items()}

    @functools.cached_property
    def _exponents(self) -> list[float]:
        """The exponent ``a`` at each table rate but 0, fitted on the uniform plans, held to
        :data:`EXPONENT_RANGE`, once per table."""
        uniform = self._monotone(self.uniform_ms)
        low, high = EXPONENT_RANGE
        exponents = []
        for k in range(1, len(self.rates)):
            alone = sum(math.log(row[k] / self.base_ms) for row in self._monotone_rows.values())
            together = math.log(uniform[k] / self.base_ms)
            exponents.append(min(max(together / alone, low), high) if abs(alone) > 1e-9 else 1.0)
        return exponents

    def _monotone(self, row: list[float]) -> list[float]:
        """``row`` with each entry at most the one before it, the first at most the baseline's."""
        return [float(v) for v in np.minimum.accumulate(np.minimum(np.asarray(row, dtype=float), self.base_ms))]

    def _interaction(self, mean_rate: float) -> float:
        """The fitted exponent (:attr:`_exponents`) at the plan's mean rate, interpolated."""
        if not self._exponents:
            return 1.0
        return float(np.interp(mean_rate, self.rates[1:], self._exponents))

    def write(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=1))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> LatencyTable:
        """The table ``raw`` holds, checked field by field (``where`` names it in errors)."""
        if not isinstance(raw, dict) or raw.get("format") != TABLE_FORMAT:
            raise AutopruneError(f"{where} is not an autoprune latency table (written by `autoprune latency-table`)")
        bad = [k for k, fits in _TABLE_FIELDS.items() if k not in raw or not fits(raw[k])]
        bad += [k for k, fits in _OPTIONAL_FIELDS.items() if k in raw and not fits(raw[k])]
        points = len(raw["rates"]) if "rates" not in bad else None
        if points is not None and "ms" not in bad and any(len(row) != points for row in raw["ms"].values()):
            bad.append("ms")
        if points is not None and "uniform_ms" not in bad and len(raw["uniform_ms"]) != points:
            bad.append("uniform_ms")
        if bad:
            raise AutopruneError(
                f"{where} is not a valid latency table: {', '.join(dict.fromkeys(bad))} missing or malformed "
                "(write it again with `autoprune latency-table`)"
            )
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    @classmethod
    def read(cls, path: str | Path) -> LatencyTable:
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise AutopruneError(f"latency table {str(path)!r} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AutopruneError(f"latency table {str(path)!r} is not JSON") from None
        except OSError as exc:  # a folder, a file this user may not read
            raise AutopruneError(f"latency table {str(path)!r} cannot be read: {exc.strerror or exc}") from None
        return cls.from_dict(raw, f"{str(path)!r}")

    def check_fits(
        self, groups: list[str], batch_size: int, input_shape: list[int], where: str, runtime: Runtime | None = None
    ) -> None:
        """Refuse a table measured for other groups, another latency batch or another input, or (given
        ``runtime``) in another backend or on another device: its milliseconds are not the study's."""
        if sorted(self.ms) != sorted(groups):
            missing = sorted(set(groups) - set(self.ms))
            raise AutopruneError(
                f"{where} was measured for other groups than this model's"
                f"{'; it lacks ' + ', '.join(missing[:3]) if missing else ''}"
            )
        if self.batch_size != batch_size or list(self.input_shape) != list(input_shape):
            raise AutopruneError(
                f"{where} was measured at batch size {self.batch_size} on inputs "
                f"{tuple(self.input_shape)}; this study times batch size {batch_size} on "
                f"{tuple(input_shape)}"
            )
        if runtime is not None and (self.backend, self.device) != (runtime.backend, runtime.device):
            raise AutopruneError(
                f"{where} was timed in {self.runtime.provider}; this study times latency in {runtime.provider} "
                "(set latency_backend and latency_device as the table was measured, or measure it again)"
            )


def check_latency_settings(settings, groups: list[str], timing_input: Any) -> None:
    """What a study that measures latency needs, checked before any work: its ``latency_table`` file
    readable, valid, and measured for the searched ``groups``, the latency batch ``timing_input`` and the
    study's runtime; without one, the runtime to measure a table in, on this machine."""
    runtime = Runtime.of(settings)
    if settings.latency_table:
        table = LatencyTable.read(settings.latency_table)
        table.check_fits(groups, *input_shape(timing_input), f"latency table {settings.latency_table!r}", runtime)
    else:
        runtime.check()


def time_model(model: nn.Module, timing_input: Any, runtime: Runtime, min_run_time: float = 0.2) -> float:
    """Milliseconds of a forward pass of ``model`` in ``runtime``: the fastest of the timed blocks, which
    other processes on a shared machine disturb least (:func:`autoprune.runtimes.time_ms`; ``model`` unchanged)."""
    return time_ms(model, timing_input, runtime, min_run_time=min_run_time)


def measure_table(
    baseline: nn.Module,
    example: torch.Tensor,
    timing_input: torch.Tensor,
    groups: list[str],
    rate_max: float,
    runtime: Runtime = PYTORCH_CPU,
    round_to: int = 1,
    round_min: int = 0,
) -> LatencyTable:
    """Time the baseline, then the baseline with each group alone pruned at each table rate, and with every
    group pruned at each of them, in ``runtime`` (with the study's channel rounding)."""
    runtime.check()
    rates = [float(r) for r in np.linspace(0.0, rate_max, TABLE_POINTS)]
    plans = {("base", 0): {}}
    plans.update({(group, k): {group: rate} for group in groups for k, rate in enumerate(rates) if k})
    plans.update({("uniform", k): dict.fromkeys(groups, rate) for k, rate in enumerate(rates) if k})
    models = {
        key: prune(copy.deepcopy(baseline), example, plan, round_to=round_to, round_min=round_min) if plan else baseline
        for key, plan in plans.items()
    }
    best = dict.fromkeys(models, math.inf)
    for _ in range(TABLE_ROUNDS):  # round robin, so a burst of load elsewhere does not skew one entry
        for key, model in models.items():
            best[key] = min(best[key], time_model(model, timing_input, runtime, min_run_time=0.1))
    base = best["base", 0]
    ms = {group: [base, *(best[group, k] for k in range(1, len(rates)))] for group in groups}
    uniform = [base, *(best["uniform", k] for k in range(1, len(rates)))]
    batch, shape = input_shape(timing_input)
    return LatencyTable(base, rates, ms, uniform, runtime.device, batch, shape, runtime.backend, runtime.threads)


#: How many of the best feasible plans the search times to check its latency table.
CHECKED_PLANS = 3


def check_table(record, evaluator) -> list[dict[str, Any]] | None:
    """Time the baseline and the best feasible plans (the chosen trial, then the Pareto front) in the study's
    runtime and set each timing beside the table's prediction and the plan's FLOPs:
    ``[{"trial", "predicted_ms", "measured_ms", "flops"}]`` (trial None for the baseline); None, with a warning,
    where the study's runtime is not on this machine (a table measured on the target, searched elsewhere)."""
    settings, table = evaluator.settings, evaluator.latency_table
    runtime = Runtime.of(settings)
    try:
        runtime.check()
    except AutopruneError as exc:
        _logger.warning("the latency table's predictions are not checked against timings: %s", exc)
        return None
    timing = evaluator.timing_input
    rows = [
        {
            "trial": None,
            "predicted_ms": table.base_ms,
            "measured_ms": time_model(evaluator.baseline, timing, runtime),
            "flops": count_flops(evaluator.baseline, timing),
        }
    ]
    first = record.chosen_trial()
    trials = {t.number: t for t in [first, *record.pareto_trials()] if t is not None}
    for trial in list(trials.values())[:CHECKED_PLANS]:
        plan = record.plan(trial)
        model = plan.apply(evaluator.baseline, evaluator.example, evaluator.calibration, task=evaluator.task)
        predicted = table.predict(plan.removed_fractions(evaluator.structure.sizes))
        rows.append(
            {
                "trial": trial.number,
                "predicted_ms": predicted,
                "measured_ms": time_model(model, timing, runtime),
                "flops": count_flops(model, timing),
            }
        )
    return rows
