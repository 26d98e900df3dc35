"""Every setting of a search, with its one default and its one check, and the study-file parser.

:class:`SearchSettings` holds what a search does (budget, objective, rate grid,
importances, recovery, warm starts) and :class:`TrainSettings` how a model is
trained. Each field is declared once with :func:`setting`: its default, the
study-file section it lives in, the rule its value must follow, and whether a
resumed study may change it. Both objects validate themselves when they are
built, so a value can only be wrong in one place, and an error names the key,
the value received and what would be valid. A plugin's metric declares its own
options the same way, in an :class:`Options` subclass; a study gives them in
``[metrics.<name>]`` (``SearchSettings.metric_options``).

A study file (TOML) parses into a :class:`StudyFile`: the settings objects plus
what the study is about (model, dataset, checkpoint) and where it is kept
(name, output folder, storage). Nothing downstream reads the file again.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import logging
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .devices import DEVICE_RULE, is_device_name
from .engine.importance import DEFAULT_IMPORTANCE, DEFAULT_WEIGHT_IMPORTANCE
from .errors import AutopruneError, UnknownNameError, unknown_name
from .precision import AMP_MODES
from .runtimes import BACKENDS, DEVICES
from .zoo import declared_options, list_metrics

#: What a single-objective search minimizes.
OBJECTIVES = ("flops", "params", "latency", "nonzero_params", "size_bytes")
#: Optuna samplers a study may use, and how a search picks its first trials.
SAMPLERS = ("tpe", "gp", "cmaes", "random", "nsga2")
WARM_STARTS = ("uniform", "sensitivity", "none")
OPTIMIZERS = ("sgd", "adamw")
#: What study.budget bounds: the recalibrated model, or the model fine-tuned with [finetune].
BUDGETS = ("recalibrated", "finetuned")
#: How a plan is fine-tuned: cut then fine-tuned, or reached while fine-tuning (:mod:`autoprune.plan.elastic`).
FINETUNE_MODES = ("hard", "soft", "gradual")
SCOPES = ("local", "global", "both", "allocation")
GRANULARITIES = ("channel", "weight", "nm")
#: ``round_to = "auto"``: kept channel counts a multiple of 8 in groups of 32 channels or more. The vector
#: units and tensor cores of deployment runtimes compute 8 (or 16) channels at a time: a pruned model whose
#: widths are not multiples of 8 can be slower than the unpruned one in ONNX Runtime (docs/benchmarks.md).
#: Narrower groups are rounded to 1, or rounding would leave them nothing to prune.
AUTO_ROUND_TO, AUTO_ROUND_MIN = 8, 32
#: Samplers that handle parameters present in some trials only (scope = "both").
CONDITIONAL_SAMPLERS = ("tpe", "random")

_REQUIRED = dataclasses.MISSING
_logger = logging.getLogger(__name__)


#: The most rates a group's grid may hold: a finer grid is no better searched, and a huge one never built.
MAX_GRID_RATES = 1000
#: The largest seed: NumPy's generators and Optuna's samplers take seeds in [0, 2**32) (torch takes more).
MAX_SEED = 2**32 - 1


class SettingError(AutopruneError):
    """A setting with a wrong value; ``key`` is the setting's name."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} {message}")
        self.key = key
        self.detail = message


@dataclass(frozen=True)
class Rule:
    """What a valid value of a setting is: in words (``text``, which errors and the study-file
    reference quote), as a ``check``, and the names to suggest for a misspelled one (``choices``)."""

    text: str
    check: Callable[[Any], bool]
    choices: tuple[str, ...] = ()


def int_at_least(low: int, note: str = "") -> Rule:
    return Rule(f"an integer >= {low}{note}", lambda v: _is_int(v) and v >= low)


def number_at_least(low: float, note: str = "") -> Rule:
    return Rule(f"a number >= {low:g}{note}", lambda v: _is_number(v) and v >= low)


def number_above(low: float) -> Rule:
    return Rule(f"a number > {low:g}", lambda v: _is_number(v) and v > low)


def rate(text: str = "a number in [0, 1)") -> Rule:
    """A fraction to remove: a number in [0, 1) (``text`` says so where another bound also applies)."""
    return Rule(text, _is_rate)


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule("one of " + ", ".join(map(repr, choices)), lambda v: v in choices, tuple(choices))


def non_empty_list_of(choices: tuple[str, ...]) -> Rule:
    return Rule(
        "a non-empty list of " + ", ".join(map(repr, choices)),
        lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(c in choices for c in v),
        tuple(choices),
    )


def setting(
    default: Any = _REQUIRED,
    *,
    section: str | None = None,
    rule: Rule | str,
    check: Callable[[Any], bool] | None = None,
    resumable: bool = False,
    choices: tuple[str, ...] = (),
    doc: str = "",
) -> Any:
    """Declare one setting.

    Args:
        default: the one default (omit for a required setting).
        section: the study-file section the key lives in (``study``, ``search``, ``train``); omitted
            for a metric's :class:`Options`, which live in ``[metrics.<name>]``.
        rule: what a valid value is: a :class:`Rule` (``int_at_least(1)``, ``one_of(SCOPES)``, ...),
            or its words ("an integer >= 1") with ``check``; errors and the study-file reference quote it.
        check: true for a valid value (types included), for a rule given in words.
        resumable: a resumed study may run with another value (a trial budget, a timeout).
        choices: names to suggest when a string value is misspelled.
        doc: one line for the study-file reference.
    """
    if isinstance(rule, Rule):
        rule, check, choices = rule.text, rule.check, choices or rule.choices
    if check is None:
        raise TypeError("a rule given in words needs check=")
    metadata = {
        "section": section,
        "rule": rule,
        "check": check,
        "resumable": resumable,
        "choices": choices,
        "doc": doc,
    }
    return field(default=default, metadata=metadata)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_rate(v: Any) -> bool:
    return _is_number(v) and 0 <= v < 1


def _is_objective(v: Any) -> bool:
    if isinstance(v, str):
        return bool(v)
    return isinstance(v, (list, tuple)) and all(isinstance(o, str) and o for o in v) and 2 <= len(set(v)) == len(v) <= 3


def _is_constraints(v: Any) -> bool:
    pairs = v.items() if isinstance(v, Mapping) else v
    try:
        return all(isinstance(name, str) and name and _is_number(bound) for name, bound in pairs)
    except (TypeError, ValueError):
        return False


def _is_names(v: Any) -> bool:
    """A non-empty list of distinct non-empty strings."""
    return (
        isinstance(v, (list, tuple))
        and len(v) > 0
        and all(isinstance(n, str) and n for n in v)
        and len(set(v)) == len(v)
    )


def _is_steps(v: Any) -> bool:
    """An integer >= 1, or a non-empty list of distinct ones."""
    if _is_int(v):
        return v >= 1
    return isinstance(v, (list, tuple)) and 0 < len(v) == len(set(v)) and all(_is_int(k) and k >= 1 for k in v)


def _to_toml(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class _Validated:
    """Validation and conversions shared by the settings dataclasses."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.metadata["check"](value):
                close = difflib.get_close_matches(value, f.metadata["choices"], n=1) if isinstance(value, str) else []
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SettingError(f.name, f"must be {f.metadata['rule']}, got {_shown(value)}{hint}")
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            elif str(f.type).startswith("float") and _is_int(value):
                object.__setattr__(self, f.name, float(value))
        self._check_together()

    def _check_together(self) -> None:
        """Rules that involve several fields."""

    def replace(self, **changes: Any):
        """A copy with ``changes`` (validated; an unknown name is an error naming the closest one)."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in names:
                raise unknown_name(type(self).__name__ + " field", key, names, list_all=True)
        return dataclasses.replace(self, **changes)

    def to_attrs(self) -> dict[str, Any]:
        """One JSON-serializable entry per field, as stored in a study's user attributes."""
        return {f.name: _to_toml(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]):
        """The settings stored by :meth:`to_attrs` (fields a store lacks take their default)."""
        return cls(**{f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs})


def _shown(value: Any) -> str:
    """A value as an error quotes it: with its type where the type is the likely mistake."""
    if (isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool)) or value is None:
        return repr(value)
    return f"{type(value).__name__} {value!r}"


class Options(_Validated):
    """A metric's own settings, declared by the plugin that registers it (``register(..., options=...)``).

    Subclass it as a frozen dataclass whose fields are declared with :func:`setting`
    (a default, a rule, a one-line doc; no section)::

        @dataclass(frozen=True)
        class WidthOptions(autoprune.Options):
            images: int = setting(100, rule=int_at_least(1), doc="validation images measured")

    A study gives them in ``[metrics.<name>]`` (or ``metric_options={name: {...}}``),
    validated like every setting; the metric reads them with ``context.options(name)``.
    They are stored with the study, and a resumed study must have the same.
    """


def options_problem(value: Any) -> str:
    """What is wrong with ``value`` as a metric's options declaration ("" when nothing)."""
    if not (isinstance(value, type) and issubclass(value, Options) and dataclasses.is_dataclass(value)):
        return "it must be a frozen dataclass derived from autoprune.Options"
    if not value.__dataclass_params__.frozen:
        return f"{value.__name__} must be a frozen dataclass (@dataclass(frozen=True))"
    for f in dataclasses.fields(value):
        if "check" not in f.metadata:
            return f"{value.__name__}.{f.name} must be declared with autoprune.settings.setting(...)"
        if f.default is _REQUIRED and f.default_factory is _REQUIRED:
            return f"{value.__name__}.{f.name} needs a default (a study may give no [metrics] table)"
        if f.metadata["resumable"]:
            return f"{value.__name__}.{f.name} cannot be resumable: a metric's options decide what its trials measure"
    return ""


def options_class(metric: str) -> type[Options]:
    """The :class:`Options` class registered metric ``metric`` declares (an error when it declares none,
    naming those that do)."""
    if metric not in list_metrics():
        raise unknown_name("metric in [metrics]", metric, list_metrics())
    declared = declared_options(metric)
    if declared is None:
        with_options = [m for m in list_metrics() if declared_options(m) is not None]
        raise AutopruneError(
            f"metric {metric!r} declares no options ([metrics.{metric}]); metrics with options: "
            + (", ".join(map(repr, with_options)) or "none")
        )
    return declared


def _build_options(metric: str, table: Any) -> Options:
    """``table`` (the options given for ``metric``) as the metric's validated :class:`Options`."""
    declared = options_class(metric)
    if isinstance(table, declared):
        return table
    if not isinstance(table, Mapping):
        what = f"a {declared.__name__} or a table of its options"
        raise SettingError(f"metrics.{metric}", f"must be {what}, got {_shown(table)}")
    names = {f.name for f in dataclasses.fields(declared)}
    for key in table:
        if key not in names:
            raise unknown_name(f"key in [metrics.{metric}]", key, names, list_all=True)
    try:
        return declared(**table)
    except SettingError as exc:
        raise SettingError(f"metrics.{metric}.{exc.key}", exc.detail) from None


def _is_option_tables(v: Any) -> bool:
    """A mapping of metric names (each table is checked against the metric's own declaration)."""
    pairs = v.items() if isinstance(v, Mapping) else v
    try:
        return all(isinstance(name, str) and name for name, _ in pairs)
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class SearchSettings(_Validated):
    """Every setting of a search, each with its single default, validated when built.

    ``SearchSettings(max_accuracy_drop=1.0, trials=100)``; ``settings.replace(seed=1)``
    gives a validated copy. :func:`autoprune.search` takes one, or its fields as
    keyword arguments.
    """

    max_accuracy_drop: float = setting(
        section="study",
        rule=number_at_least(0),
        doc="percentage points of top-1 validation accuracy the pruned model may lose (a budget worth fewer than 3 "
        "validation images, 100/N points each, is warned about and noted in the report)",
    )
    objective: str | tuple[str, ...] = setting(
        "flops",
        section="study",
        rule="a registered metric ('flops', 'params', 'latency', 'nonzero_params', 'size_bytes', a plugin's), "
        "or a list of two or three distinct ones ('accuracy' among them, say)",
        check=_is_objective,
        choices=OBJECTIVES,
        doc="optimized among feasible trials in the metric's direction; a list makes a multi-objective study",
    )
    constraints: tuple[tuple[str, float], ...] = setting(
        (),
        section="constraints",
        rule="a table of registered metric names and numbers",
        check=_is_constraints,
        doc="bounds every feasible trial meets besides the accuracy budget, e.g. latency = 5.0: at most the "
        "bound for a metric to minimize, at least for one to maximize; a bound no plan can meet (outside the "
        "metric's unit, or FLOPs or params below the most pruned plan's) is refused before training",
    )
    metric_options: tuple[tuple[str, Options], ...] = setting(
        (),
        section="metrics",
        rule="a table per registered metric, of the options it declares",
        check=_is_option_tables,
        doc="a metric's own options, as its plugin declares them ([metrics.robust_accuracy] corruption_images = 500; "
        "`autoprune plugins --kind metric` names the metrics that have options)",
    )
    trials: int = setting(
        50,
        section="study",
        rule=int_at_least(1),
        resumable=True,
        doc="completed trials the study holds when the search ends; a rerun runs only the missing ones",
    )
    timeout: float | None = setting(
        None,
        section="study",
        rule="a number of seconds > 0",
        check=lambda v: v is None or (_is_number(v) and v > 0),
        resumable=True,
        doc="no new trial starts after this many seconds",
    )
    seed: int = setting(
        0,
        section="study",
        rule=f"an integer from 0 to 2**32 - 1 = {MAX_SEED} (what NumPy and Optuna's samplers take)",
        check=lambda v: _is_int(v) and 0 <= v <= MAX_SEED,
        doc="seeds the sampler, the calibration batches and the baseline's training",
    )
    latency_batch_size: int = setting(
        1,
        section="study",
        rule=int_at_least(1),
        doc="batch size of latency measurements (the fastest block of timed forward passes)",
    )
    device: str = setting(
        "auto",
        section="study",
        rule=DEVICE_RULE,
        check=is_device_name,
        resumable=True,
        doc="where the baseline is trained and every trial pruned and scored: 'auto' takes CUDA when torch "
        "sees it, else the CPU",
    )
    amp: str = setting(
        "off",
        section="study",
        rule=one_of(AMP_MODES),
        doc="mixed precision of trial scoring and finalists' fine-tuning: 'bf16' or 'fp16' autocast (for tensor "
        "cores; fp16 training scales the loss), 'off' for float32; the baseline is scored the same way",
    )
    budget: str = setting(
        "recalibrated",
        section="study",
        rule=one_of(BUDGETS),
        doc="what max_accuracy_drop bounds: 'recalibrated', each plan scored once its BatchNorm statistics are "
        "recalibrated; 'finetuned', each plan scored after the [finetune] recipe, climbing search.rungs so that "
        "plans a short fine-tune rules out stop early (the chosen trial's fine-tuned weights are what export writes)",
    )
    latency_device: str = setting(
        "cpu",
        section="study",
        rule=one_of(("cpu", "cuda")),
        doc="where latency is timed (in latency_backend): the study's latency table, the check of its predictions "
        "and the export's latency",
    )
    latency_backend: str = setting(
        "torch",
        section="study",
        rule=one_of(BACKENDS),
        doc="the runtime latency is timed in, on the exported graph: PyTorch itself, ONNX Runtime (CPU or CUDA "
        "provider), OpenVINO's CPU plugin (extra 'openvino') or TensorRT on CUDA (extra 'tensorrt')",
    )
    latency_threads: int = setting(
        0,
        section="study",
        rule=int_at_least(0, " (0: the runtime's default)"),
        doc="CPU threads latency is timed with, as the deployment target has them; 0 leaves the runtime's default",
    )
    latency_table: str | None = setting(
        None,
        section="study",
        rule="a path to a JSON file written by `autoprune latency-table`",
        check=lambda v: v is None or (isinstance(v, str) and bool(v)),
        doc="a latency table measured on the target device; without it the search measures one on this "
        "machine when latency is an objective or a constraint",
    )
    importances: tuple[str, ...] = setting(
        (DEFAULT_IMPORTANCE,),
        section="search",
        rule="a non-empty list of distinct registered importance names",
        check=_is_names,
        doc="importances each group chooses from",
    )
    rate_min: float = setting(0.0, section="search", rule=rate(), doc="the smallest rate of every group's grid")
    rate_max: float = setting(
        0.8,
        section="search",
        rule=rate("a number in [rate_min, 1)"),
        doc="the largest rate of every group's grid",
    )
    rate_step: float = setting(
        0.05,
        section="search",
        rule=number_above(0),
        doc="the grid's step: rate_min, rate_min + rate_step, ... up to rate_max",
    )
    calibration_batches: int = setting(
        20,
        section="search",
        rule=int_at_least(1),
        doc="training batches each trial recalibrates BatchNorm on (the same for every trial)",
    )
    batch_size: int = setting(
        128,
        section="search",
        rule=int_at_least(1),
        doc="batch size of calibration and evaluation",
    )
    val_images: int = setting(
        0,
        section="search",
        rule=int_at_least(0, " (0: the whole validation split)"),
        doc="score trials on this many validation images, a fixed subset drawn from the seed (stratified by "
        "class when the dataset has a `targets` attribute); finalists and exports use the whole split",
    )
    data_workers: int = setting(
        0,
        section="search",
        rule=int_at_least(0),
        resumable=True,
        doc="DataLoader worker processes reading the validation and calibration batches (0: the main process; "
        "the batches are the same for any count)",
    )
    scope: str = setting(
        "local",
        section="search",
        rule=one_of(SCOPES),
        doc="'local': a rate per group; 'global': one rate over all channels ranked by mean-normalized "
        "importance, with a searched cap per group, as Torch-Pruning's global pruning; 'both': the "
        "sampler picks per trial; 'allocation': a share of the budget and a coefficient per group that "
        "scales its sensitivity curve, turned into rates by dynamic programming over the curves (SPDY; "
        "every group takes the first importance, which the curves are measured with)",
    )
    granularity: str | tuple[str, ...] = setting(
        "channel",
        section="search",
        rule="'channel', 'weight' or 'nm', or a list of 'channel' with one of the others",
        check=lambda v: (
            (v in GRANULARITIES)
            or (
                isinstance(v, (list, tuple))
                and 0 < len(v) == len(set(v))
                and all(g in GRANULARITIES for g in v)
                and not {"weight", "nm"} <= set(v)
            )
        ),
        choices=GRANULARITIES,
        doc="what a plan removes in each group: channels (a rate; real speed-up), single weights of the "
        "group's layers (a sparsity, ranked by weight_importance) or N:M blocks of them (on or off); a list combines "
        "channels with one of the others (channels first)",
    )
    nm: tuple[int, ...] = setting(
        (2, 4),
        section="search",
        rule="[N, M] with 0 < N < M",
        check=lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(k) for k in v) and 0 < v[0] < v[1],
        doc="the N:M pattern of granularity 'nm': N weights kept in every M along the input dimension",
    )
    weight_importance: str = setting(
        DEFAULT_WEIGHT_IMPORTANCE,
        section="search",
        rule="a registered weight-importance name (autoprune plugins --kind weight_importance)",
        check=lambda v: isinstance(v, str) and bool(v),
        doc="what weight and N:M pruning keep: a registered weight importance ('magnitude', 'snip', or a plugin's)",
    )
    sparsity_max: float = setting(
        0.9,
        section="search",
        rule=rate(),
        doc="the largest weight sparsity of a group's grid (granularity 'weight'; steps of rate_step)",
    )
    round_to: int | str = setting(
        "auto",
        section="search",
        rule="'auto' or an integer >= 1",
        check=lambda v: v == "auto" or (_is_int(v) and v >= 1),
        doc="keep every pruned group's channel count a multiple of this (Torch-Pruning's round_to; the kept "
        f"count is rounded up); 'auto': multiples of {AUTO_ROUND_TO} in groups of {AUTO_ROUND_MIN} channels or more, "
        "which ONNX Runtime, OpenVINO and TensorRT kernels need to turn fewer FLOPs into speed (docs/benchmarks.md)",
    )
    reconstruct: bool = setting(
        True,
        section="search",
        rule=boolean(),
        doc="after channels are removed, refit every layer that lost input channels by least squares so that it "
        "reproduces its unpruned outputs on calibration batches (He et al., ICCV 2017); channel pruning only",
    )
    steps: int | tuple[int, ...] = setting(
        1,
        section="search",
        rule="an integer >= 1, or a list of distinct ones for the sampler to choose from",
        check=_is_steps,
        doc="prune towards each trial's rates in this many equal steps, each followed by BatchNorm "
        "recalibration (and recovery_steps of fine-tuning); a list makes it the searched parameter 'steps'",
    )
    recovery_steps: int = setting(
        0,
        section="search",
        rule=int_at_least(0),
        doc="optimizer steps of fine-tuning on the calibration batches after each pruning step when steps > 1 "
        "(SGD with momentum, learning rate 0.01, cosine schedule); needs steps > 1 (or a list holding one)",
    )
    sampler: str = setting(
        "tpe",
        section="search",
        rule=one_of(SAMPLERS),
        doc="Optuna's sampler: multivariate TPE, Gaussian process, CMA-ES, random search or NSGA-II",
    )
    warm_start: str = setting(
        "uniform",
        section="search",
        rule=one_of(WARM_STARTS),
        doc="the first trials: the uniform_starts, or plans built from per-group sensitivity curves (which "
        "also bound each group's range); the uniform-rate and global baselines, exactly as found, are tried "
        "first in every case",
    )
    refine: float = setting(
        0.3,
        section="search",
        rule="a share of the trials from 0 to 0.9",
        check=lambda v: _is_number(v) and 0 <= v <= 0.9,
        resumable=True,
        doc="the last share of the trials moves the best feasible plan a grid step at a time (one group pruned "
        "further, maybe another less), each move from the best plan when it starts: a local refinement; 0: the "
        "sampler draws every trial (single-objective studies only; 0.3 found more than 0 on both benchmark "
        "architectures, docs/benchmarks.md)",
    )
    early_stop: str = setting(
        "statistical",
        section="search",
        rule=one_of(("exact", "statistical", "off")),
        doc="stop a trial's validation once it cannot be within the budget ('exact': certain; "
        "'statistical': at a 0.1% false-stop risk per check)",
    )
    rungs: tuple[float, ...] = setting(
        (0.1, 0.3, 1.0),
        section="search",
        rule="a rising list of fractions in (0, 1] ending in 1",
        check=lambda v: (
            isinstance(v, (list, tuple))
            and bool(v)
            and all(_is_number(f) and 0 < f <= 1 for f in v)
            and all(a < b for a, b in itertools.pairwise(v))
            and v[-1] == 1
        ),
        doc="with study.budget = 'finetuned': the fractions of the [finetune] recipe after which a plan is scored "
        "and may be stopped (its recalibrated score comes first)",
    )
    max_failures: int = setting(
        10,
        section="search",
        rule=int_at_least(1),
        resumable=True,
        doc="stop the search with an error after this many failed trials in a row (a broken plugin, a "
        "model that cannot be pruned)",
    )
    heartbeat_interval: int = setting(
        10,
        section="search",
        rule=int_at_least(1, note=" (seconds)"),
        resumable=True,
        doc="a running trial records a heartbeat this often; a trial silent for 3 intervals (its worker was "
        "killed) is failed and its parameters run again",
    )
    finalists: int = setting(
        0,
        section="search",
        rule=int_at_least(0),
        resumable=True,
        doc="fine-tune this many of the best feasible plans after the search with [finetune] and record "
        "their accuracy, to show how well the recalibrated score ranks plans (needs finetune.epochs >= 1)",
    )
    uniform_starts: tuple[float, ...] = setting(
        (0.1, 0.2, 0.3, 0.4, 0.5),
        section="search",
        rule="a list of rates in [rate_min, rate_max]",
        check=lambda v: isinstance(v, (list, tuple)) and all(_is_rate(r) for r in v),
        doc="uniform plans (the same rate in every group) tried first with warm_start = 'uniform'",
    )
    prune_only: tuple[str, ...] = setting(
        (),
        section="search",
        rule="a list of module-name prefixes",
        check=lambda v: isinstance(v, (list, tuple)) and all(isinstance(n, str) and n for n in v),
        doc="search only the groups whose module names start with one of these (['backbone']); empty: every group",
    )

    def _check_together(self) -> None:
        if self.rate_max < self.rate_min:
            raise SettingError(
                "rate_max", f"must be {_rule('rate_max')}, got {self.rate_max!r} (rate_min is {self.rate_min!r})"
            )
        span = self.rate_max - self.rate_min
        if span > 0 and self.rate_step > span + 1e-12:
            raise SettingError(
                "rate_step",
                f"must be at most rate_max - rate_min = {span:g}, got {self.rate_step!r}: the grid would hold "
                f"rate_min ({self.rate_min!r}) alone",
            )
        if span / self.rate_step + 1 > MAX_GRID_RATES:
            raise SettingError(
                "rate_step",
                f"gives {int(span / self.rate_step) + 1:,} rates per group from rate_min to rate_max; at most "
                f"{MAX_GRID_RATES:,} are searched (rate_step >= {span / (MAX_GRID_RATES - 1):.3g}), got {self.rate_step!r}",
            )
        for rate in self.uniform_starts:
            if not self.rate_min <= rate <= self.rate_max:
                raise SettingError(
                    "uniform_starts",
                    f"must be {_rule('uniform_starts')} = [{self.rate_min}, {self.rate_max}], got {rate!r}",
                )
        if self.scope == "both" and self.sampler not in CONDITIONAL_SAMPLERS:
            raise SettingError(
                "scope",
                f"'both' needs a sampler that handles parameters some trials lack: "
                f"{' or '.join(map(repr, CONDITIONAL_SAMPLERS))}, got sampler {self.sampler!r}",
            )
        if self.recovery_steps and max(self.step_choices) == 1:
            raise SettingError(
                "recovery_steps",
                f"= {self.recovery_steps!r} fine-tunes between pruning steps, but steps = {_to_toml(self.steps)!r} "
                "prunes in one step: give steps > 1 (or a list holding one), or recovery_steps = 0",
            )
        if self.budget == "finetuned" and self.finalists:
            raise SettingError(
                "finalists",
                f"= {self.finalists} fine-tunes the best plans after the search, but study.budget = 'finetuned' "
                "fine-tunes every plan that climbs its rungs already (the report shows each one's score at every "
                "rung): give finalists = 0",
            )
        if self.latency_device not in DEVICES[self.latency_backend]:
            raise SettingError(
                "latency_device",
                f"must be {' or '.join(map(repr, DEVICES[self.latency_backend]))} with latency_backend = "
                f"{self.latency_backend!r}, got {self.latency_device!r}",
            )
        pairs = self.constraints.items() if isinstance(self.constraints, Mapping) else self.constraints
        object.__setattr__(self, "constraints", tuple(sorted((str(n), float(b)) for n, b in pairs)))
        if "accuracy_drop" in self.bounds:
            raise SettingError("constraints", "cannot bound accuracy_drop: study.max_accuracy_drop is that budget")
        tables = self.metric_options.items() if isinstance(self.metric_options, Mapping) else self.metric_options
        options = tuple(sorted((name, _build_options(name, table)) for name, table in tables))
        object.__setattr__(self, "metric_options", options)

    def options_of(self, metric: str) -> Options:
        """The options of registered metric ``metric``: the study's ``[metrics.<metric>]``, else its defaults."""
        given = dict(self.metric_options)
        return given[metric] if metric in given else options_class(metric)()

    @property
    def channel_rounding(self) -> tuple[int, int]:
        """``(round_to, round_min)`` of this study's plans: kept channel counts a multiple of ``round_to`` in
        groups of ``round_min`` channels or more (:data:`AUTO_ROUND_TO` and :data:`AUTO_ROUND_MIN` for 'auto')."""
        return (AUTO_ROUND_TO, AUTO_ROUND_MIN) if self.round_to == "auto" else (self.round_to, 0)

    @property
    def step_choices(self) -> tuple[int, ...]:
        """The steps setting as a tuple (one value unless the sampler chooses)."""
        return (self.steps,) if _is_int(self.steps) else tuple(self.steps)

    @property
    def granularities(self) -> tuple[str, ...]:
        """The granularity setting as a tuple."""
        return (self.granularity,) if isinstance(self.granularity, str) else tuple(self.granularity)

    @property
    def bounds(self) -> dict[str, float]:
        """The ``[constraints]`` as ``{metric: bound}``."""
        return dict(self.constraints)

    @property
    def objectives(self) -> list[str]:
        """The objectives as a list (one name for a single-objective study)."""
        return [self.objective] if isinstance(self.objective, str) else list(self.objective)

    @property
    def multi_objective(self) -> bool:
        return not isinstance(self.objective, str)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of setting ``name``, as declared (the one place it is written)."""
        return cls.__dataclass_fields__[name].default

    @staticmethod
    def is_resumable(name: str) -> bool:
        """Whether a resumed study may run with another value of setting ``name``."""
        return SearchSettings.__dataclass_fields__[name].metadata["resumable"]

    def resume_conflicts(self, stored: SearchSettings) -> list[tuple[str, Any, Any]]:
        """``(name, stored value, this value)`` for every setting a resumed study cannot change; a metric's
        option is named as the study file spells it (``metrics.robust_accuracy.corruptions``)."""
        conflicts = [
            (f.name, getattr(stored, f.name), getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not f.metadata["resumable"]
            and f.name != "metric_options"
            and getattr(stored, f.name) != getattr(self, f.name)
        ]
        for metric in sorted({name for name, _ in (*stored.metric_options, *self.metric_options)}):
            before, now = stored.options_of(metric).to_attrs(), self.options_of(metric).to_attrs()
            conflicts += [(f"metrics.{metric}.{k}", before[k], now[k]) for k in before if before[k] != now[k]]
        return conflicts

    def to_attrs(self) -> dict[str, Any]:
        """One JSON-serializable entry per field; ``metric_options`` as ``{metric: {option: value}}``."""
        attrs = super().to_attrs()
        attrs["metric_options"] = {name: options.to_attrs() for name, options in self.metric_options}
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> SearchSettings:
        """The settings stored by :meth:`to_attrs` (an older study's, as the study record's migration reads
        them). Options a metric no longer declares are left out, as settings that no longer exist are."""
        values = _readable({f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs})
        tables: dict[str, dict[str, Any]] = {}
        for metric, table in attrs.get("metric_options", {}).items():
            declared = {f.name for f in dataclasses.fields(options_class(metric))}
            tables[metric] = {k: v for k, v in table.items() if k in declared}
        return cls(**{**values, "metric_options": tables})


def _readable(values: dict[str, Any]) -> dict[str, Any]:
    """Stored settings that rules added later refuse, as they were searched: repeated importances and
    steps (a repeat adds nothing), and recovery steps without a step to recover between (never run)."""
    values = dict(values)
    for name in ("importances", "steps"):
        if isinstance(values.get(name), (list, tuple)):
            values[name] = list(dict.fromkeys(values[name]))
    steps = values.get("steps", 1)
    if steps == 1 or (isinstance(steps, list) and steps and max(steps) == 1):
        values["recovery_steps"] = 0
    return values


#: Settings that were :class:`SearchSettings` fields and are now a metric's options: the old name (a
#: study attribute, a key of an old study file's ``[search]``) -> (metric, option).
MOVED_TO_OPTIONS = {
    "corruptions": ("robust_accuracy", "corruptions"),
    "corruption_severities": ("robust_accuracy", "corruption_severities"),
    "corruption_images": ("robust_accuracy", "corruption_images"),
}


def moved_key(name: str) -> str:
    """Where setting ``name``, which moved to a metric's options, is now written."""
    metric, option = MOVED_TO_OPTIONS[name]
    return f"metrics.{metric}.{option}"


def setting_key(name: str) -> str:
    """A setting as a study file spells it: ``search.batch_size``, ``study.seed``, ``[constraints]``,
    ``[metrics]``; a metric's option is spelled so already (``metrics.robust_accuracy.corruptions``)."""
    if name == "constraints":
        return "[constraints]"
    if name == "metric_options":
        return "[metrics]"
    if name.startswith("metrics."):
        return name
    for cls in (SearchSettings, TrainSettings):
        if name in cls.__dataclass_fields__:
            return f"{cls.__dataclass_fields__[name].metadata['section']}.{name}"
    raise KeyError(name)


def _rule(name: str) -> str:
    return next(f.metadata["rule"] for f in dataclasses.fields(SearchSettings) if f.name == name)


@dataclass(frozen=True)
class TrainSettings(_Validated):
    """A training recipe: SGD with Nesterov momentum (or AdamW) and a cosine schedule, after an
    optional linear warm-up, with optional gradient-norm clipping.

    The study file's ``[train]`` trains the baseline when no checkpoint is given;
    fine-tuning at export uses the same loop with its own epochs and learning rate.
    """

    epochs: int = setting(
        15,
        section="train",
        rule=int_at_least(0),
        doc="epochs over the training split",
    )
    batch_size: int = setting(64, section="train", rule=int_at_least(1), doc="training batch size")
    lr: float = setting(
        0.05,
        section="train",
        rule=number_above(0),
        doc="initial learning rate, decayed to 0 on a cosine schedule",
    )
    momentum: float = setting(0.9, section="train", rule=rate(), doc="SGD momentum (Nesterov when > 0)")
    weight_decay: float = setting(0.0005, section="train", rule=number_at_least(0), doc="L2 weight decay")
    optimizer: str = setting(
        "sgd",
        section="train",
        rule=one_of(OPTIMIZERS),
        doc="SGD, or AdamW (Loshchilov & Hutter, ICLR 2019; decoupled weight decay): detectors train faster with it",
    )
    warmup_epochs: float = setting(
        0.0,
        section="train",
        rule=number_at_least(0),
        doc="epochs of linear learning-rate warm-up from 0 before the cosine decay",
    )
    clip_grad_norm: float = setting(
        0.0,
        section="train",
        rule=number_at_least(0, note=" (0: off)"),
        doc="clip the gradients' global norm to this (0: no clipping)",
    )
    mode: str = setting(
        "hard",
        section="finetune",
        rule=one_of(FINETUNE_MODES),
        doc="how a plan is fine-tuned: removed first (hard), or zeroed and recoverable in the baseline (soft), "
        "or raised from rate 0 (gradual), then cut; docs/pruning.md",
    )

    def cache_identity(self) -> dict[str, Any]:
        """What a cached baseline's weights depend on: every field, less the later ones at their defaults
        (so baselines cached before those fields existed stay valid)."""
        attrs = self.to_attrs()
        return {
            k: v
            for k, v in attrs.items()
            if k in ("epochs", "batch_size", "lr", "momentum", "weight_decay")
            or v != _to_toml(self.__dataclass_fields__[k].default)
        }


#: Fine-tuning a pruned model (``[finetune]``: export's fine-tuning and the search's
#: finalists): the training recipe with one epoch and a smaller learning rate.
FINETUNE = TrainSettings(epochs=1, lr=0.01)
#: What a ``[finetune]`` key says beyond "as the same ``[train]`` key" (for the study-file reference).
FINETUNE_DOCS = {
    "epochs": "epochs of fine-tuning (every plan of a fine-tuned budget, or the finalists; `autoprune export "
    "--finetune-epochs` sets its own)",
    "mode": "how a plan is fine-tuned: its channels removed first (hard), or zeroed in the baseline but "
    "recoverable (soft), or zeroed from rate 0 up (gradual), then cut to its widths; a fine-tuned budget's "
    "plans and the finalists (`autoprune export --finetune-mode` sets its own); docs/pruning.md",
}


# ---------------------------------------------------------------------------------------
# The study file


@dataclass(frozen=True)
class StudyFile:
    """A parsed study file: what to prune, on which data, how to search, where to keep it."""

    name: str
    model: str
    dataset: str
    settings: SearchSettings
    train: TrainSettings = TrainSettings()
    finetune: TrainSettings = FINETUNE
    model_params: Mapping[str, Any] = field(default_factory=dict)
    dataset_params: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    out: str | None = None
    storage: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        check_finalists(self.settings, self.finetune)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def replace(self, **changes: Any) -> StudyFile:
        return dataclasses.replace(self, **changes)


def check_finalists(settings: SearchSettings, finetune: TrainSettings) -> None:
    """The rules that involve the search and the fine-tuning recipe together: finalists and a fine-tuned
    budget need epochs."""
    if settings.budget == "finetuned" and finetune.epochs == 0:
        raise SettingError(
            "budget",
            "= 'finetuned' scores every plan after the [finetune] recipe, but finetune.epochs = 0 would leave them "
            "as they are; give finetune.epochs >= 1 or study.budget = 'recalibrated'",
        )
    if settings.finalists and finetune.epochs == 0:
        raise AutopruneError(
            f"search.finalists = {settings.finalists} fine-tunes the best plans with [finetune], but "
            "finetune.epochs = 0 would leave them as they are; give finetune.epochs >= 1 or search.finalists = 0"
        )


#: Study-file keys that are not search or training settings: (type, rule, default, doc).
FILE_KEYS: dict[str, dict[str, tuple[type, str, str, str]]] = {
    "study": {
        "name": (
            str,
            "letters, digits, '-', '_' and '.', starting with a letter or digit",
            "the file name without `.toml`",
            "the study's name in the storage (and of its default folder)",
        ),
        "out": (str, "a path", "`runs/<name>`", "the output folder"),
        "storage": (
            str,
            (
                "an Optuna storage URL: sqlite:///F.db, postgresql+psycopg://U:P@HOST/DB, "
                "mysql+pymysql://U:P@HOST/DB or journal:///F.log"
            ),
            "`sqlite:///<out>/study.db`",
            (
                "where the study is kept (PostgreSQL needs `pip install 'autoprune[postgres]'`; see "
                "docs/multi_machine.md)"
            ),
        ),
    },
    "model": {
        "name": (str, "a registered model", "required", "`autoprune plugins --kind model` lists them"),
        "params": (dict, "a table", "`{}`", "keyword parameters of the model's factory"),
        "checkpoint": (
            str,
            "a path to a state_dict",
            "none: train and cache",
            "trained weights; without them the baseline is trained with [train]",
        ),
    },
    "dataset": {
        "name": (str, "a registered dataset", "required", "`autoprune plugins --kind dataset` lists them"),
        "params": (dict, "a table", "`{}`", "keyword parameters of the dataset's factory"),
    },
}
#: What a study name may be: it names a folder, so no separators, no leading dot.
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Other spellings of a key: ``objectives = [...]`` reads better for a list.
ALIASES = {("study", "objectives"): "objective"}


def section_keys() -> dict[str, list[str]]:
    """Every key a study file may hold, by section (aliases included)."""
    keys: dict[str, list[str]] = {s: list(k) for s, k in FILE_KEYS.items()}
    for cls in (SearchSettings, TrainSettings):
        for f in dataclasses.fields(cls):
            if f.name not in ("constraints", "metric_options"):  # these hold metric names, not fixed keys
                keys.setdefault(f.metadata["section"], []).append(f.name)
    keys["constraints"] = []
    keys["metrics"] = []
    keys["finetune"] = list(TrainSettings.__dataclass_fields__)
    for section, alias in ALIASES:
        keys[section].append(alias)
    return keys


def parse_study_file(raw: Mapping[str, Any], *, path: str | None = None, name: str | None = None) -> StudyFile:
    """Validate a parsed study file (a dict of sections) into a :class:`StudyFile`."""
    valid = section_keys()
    values: dict[str, dict[str, Any]] = {s: {} for s in ("study", "search", "train", "finetune", "model", "dataset")}
    spelled: dict[str, str] = {}  # a setting's name -> the key the file used for it
    options: dict[str, dict[str, Any]] = {}  # [metrics.<name>] tables
    for section, body in raw.items():
        if section not in valid:
            raise unknown_name("section", section, valid)
        if not isinstance(body, dict):
            raise AutopruneError(f"[{section}] must be a table, got {type(body).__name__}")
        if section == "constraints":  # metric = bound; the names are checked against the registry at preflight
            for key, bound in body.items():
                if not _is_number(bound):
                    raise AutopruneError(
                        f"constraints.{key} must be a number (the metric's bound), got {_shown(bound)}"
                    )
            values["search"]["constraints"] = body
            continue
        if section == "metrics":  # a table of options per metric, checked against what the metric declares
            for metric, table in body.items():
                if not isinstance(table, dict):
                    raise AutopruneError(
                        f"metrics.{metric} must be a table of the metric's options, got {_shown(table)}"
                    )
                options.setdefault(metric, {})
                for key, value in table.items():
                    _add_option(options, spelled, metric, key, value, f"metrics.{metric}.{key}")
            continue
        for key, value in body.items():
            if section == "search" and key in MOVED_TO_OPTIONS:
                _logger.warning("search.%s is now %s; move it there (read as such)", key, moved_key(key))
                metric, option = MOVED_TO_OPTIONS[key]
                _add_option(options, spelled, metric, option, value, f"search.{key}")
                continue
            if key not in valid[section]:
                elsewhere = [f"[{other}]" for other, keys in valid.items() if key in keys]
                if elsewhere:  # a key of another section: say where it goes rather than what it resembles
                    raise UnknownNameError(
                        f"unknown key in [{section}] {key!r}; it is a key of {' and '.join(elsewhere)}"
                    )
                raise unknown_name(f"key in [{section}]", key, valid[section], list_all=True)
            target = ALIASES.get((section, key), key)
            if target in values[section]:
                raise AutopruneError(f"give {section}.{target} or {section}.{key}, not both")
            values[section][target] = value
            spelled[f"{section}.{target}"] = f"{section}.{key}"
    for section, keys in FILE_KEYS.items():
        for key, (kind, rule, default, _) in keys.items():
            if key in values[section] and not isinstance(values[section][key], kind):
                value = values[section][key]
                raise AutopruneError(f"{section}.{key} must be {rule}, got {type(value).__name__} {value!r}")
            if default == "required" and key not in values[section]:
                raise AutopruneError(f"the study file needs {section}.{key}")
    file_keys = {s: {k: v for k, v in values[s].items() if k in FILE_KEYS.get(s, {})} for s in values}
    search_values = {k: v for s in ("study", "search") for k, v in values[s].items() if k not in file_keys[s]}
    if "max_accuracy_drop" not in search_values:
        raise AutopruneError("the study file needs study.max_accuracy_drop")
    if options:
        search_values["metric_options"] = options
    settings = _build(SearchSettings, search_values, spelled)
    train = _build(TrainSettings(), values["train"], spelled, "train")
    finetune = _build(FINETUNE, values["finetune"], spelled, "finetune")
    model, dataset = file_keys["model"], file_keys["dataset"]
    study_name = file_keys["study"].get("name", name or "study")
    if not STUDY_NAME.match(study_name):
        where = "study.name" if "name" in file_keys["study"] else f"the file name {name!r} (give study.name)"
        raise AutopruneError(f"{where} must be {FILE_KEYS['study']['name'][1]}, got {study_name!r}")
    reserved = sorted({"num_classes", "in_channels"} & set(model.get("params", {})))
    if reserved:
        raise AutopruneError(f"model.params cannot set {', '.join(reserved)}: the dataset decides them")
    return StudyFile(
        name=study_name,
        model=model["name"],
        dataset=dataset["name"],
        settings=settings,
        train=train,
        finetune=finetune,
        model_params=dict(model.get("params", {})),
        dataset_params=dict(dataset.get("params", {})),
        checkpoint=model.get("checkpoint"),
        out=file_keys["study"].get("out"),
        storage=file_keys["study"].get("storage"),
        path=path,
    )


def _add_option(
    options: dict[str, dict[str, Any]], spelled: dict[str, str], metric: str, option: str, value: Any, key: str
) -> None:
    """Option ``option`` of ``metric`` as the file gave it (under ``key``), once."""
    target = f"metrics.{metric}.{option}"
    if option in options.setdefault(metric, {}):
        raise AutopruneError(f"give {spelled[target]} or {key}, not both")
    options[metric][option] = value
    spelled[target] = key


def _build(base: Any, values: dict[str, Any], spelled: dict[str, str], section: str | None = None):
    """``base(**values)`` for a settings class, ``base.replace(**values)`` for defaults of a section's own."""
    try:
        return base(**values) if isinstance(base, type) else base.replace(**values)
    except SettingError as exc:
        key = f"{section}.{exc.key}" if section else setting_key(exc.key)
        raise AutopruneError(f"{spelled.get(key, key)} {exc.detail}") from None


def load_study_file(path: str | Path) -> StudyFile:
    """Read and validate the study file at ``path``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AutopruneError(f"study file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise AutopruneError(f"study file {str(path)!r} is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise AutopruneError(f"{path} is not valid TOML: {exc}") from None
    return parse_study_file(raw, path=str(path.resolve()), name=path.stem)
