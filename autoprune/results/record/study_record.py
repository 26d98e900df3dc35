"""The study record: what an autoprune study keeps in its Optuna storage, read and written here alone.

The keys and their layout are :mod:`.schema`'s; which trials a study delivers,
:mod:`.selection`'s; what a trial records, :mod:`.trials`'s; the baseline's
weights, :mod:`.artifacts`'. :class:`StudyRecord` is the one object the search,
the report, the export and :class:`autoprune.Study` hold.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ...errors import AutopruneError, unknown_name
from ...plan import ALLOCATION_LEVEL, Plan, PlanSpace
from ...settings import SearchSettings
from ...storage import open_storage, storage_file
from . import artifacts, creation, selection, trials
from .schema import (
    BUDGET_RECIPE,
    BULKY,
    CONSTRAINT,
    FINALISTS,
    GROUPS,
    LATENCY_CHECK,
    LATENCY_TABLE,
    METRICS,
    PLAN_ATTR,
    RATE_LIMITS,
    REFERENCES,
    REPLACES,
    RESOLUTION_WARNING,
    RUN_KEYS,
    SCORE,
    SCORE_LABEL,
    SENSITIVITY,
    SOURCE_KEYS,
    WARM_STARTED,
    migrate,
)


class _Stored:
    """A study attribute the record reads as a property and writes by assignment (None until written)."""

    def __init__(self, key: str, doc: str) -> None:
        self.key, self.__doc__ = key, doc

    def __get__(self, record: StudyRecord | None, owner: type) -> Any:
        return self if record is None else record.attrs.get(self.key)

    def __set__(self, record: StudyRecord, value: Any) -> None:
        record.write_attrs({self.key: value})


class StudyRecord:
    """Reads and writes the autoprune keys of an ``optuna.Study``."""

    references = _Stored(REFERENCES, "The uniform and global baselines: ``{'uniform': {'rate', 'accuracy', ...}}``.")
    finalists = _Stored(
        FINALISTS, "``{'recipe', 'trials': [{'trial', 'accuracy', 'finetuned_accuracy'}], 'spearman'}``."
    )
    latency_table = _Stored(LATENCY_TABLE, "The latency table (a ``LatencyTable`` as a dict) the study predicts with.")
    latency_check = _Stored(
        LATENCY_CHECK, "``[{'trial', 'predicted_ms', 'measured_ms'}]``: predictions against timings."
    )
    sensitivity = _Stored(SENSITIVITY, "Rows ``group, rate, accuracy_drop, flops, params, evaluated`` of the curves.")
    warm_started = _Stored(WARM_STARTED, "True once the study's warm starts are enqueued.")
    budget_recipe = _Stored(BUDGET_RECIPE, "A fine-tuned budget's recipe: the ``[finetune]`` table as attributes.")
    resolution_warning = _Stored(
        RESOLUTION_WARNING, "One line when the accuracy budget is worth fewer than three validation images."
    )

    # what a trial records and how it is read back (the trial, not the study, holds it)
    value = staticmethod(trials.value)
    write_skipped = staticmethod(trials.write_skipped)
    write_failure = staticmethod(trials.write_failure)
    write_duplicate = staticmethod(trials.write_duplicate)
    duplicate_of = staticmethod(trials.duplicate_of)
    stands_in_for = staticmethod(trials.stands_in_for)
    retries = staticmethod(trials.retries)
    fail_reason = staticmethod(trials.fail_reason)
    scope = staticmethod(trials.scope)
    write_plan = staticmethod(trials.write_plan)
    given_plan = staticmethod(trials.given_plan)
    write_recalibrated = staticmethod(trials.write_recalibrated)
    write_rungs = staticmethod(trials.write_rungs)
    write_finetuned_weights = staticmethod(trials.write_finetuned_weights)
    rungs = staticmethod(trials.rungs)
    stopped = staticmethod(trials.stopped)
    finetune_epochs = staticmethod(trials.finetune_epochs)
    has_finetuned_weights = staticmethod(trials.has_finetuned_weights)
    # which trials the study delivers
    is_feasible = selection.is_feasible
    feasible = selection.feasible
    pareto_trials = selection.pareto_trials
    chosen_trial = selection.chosen_trial
    best_of = selection.best_of
    trial = selection.trial
    comparison = selection.comparison
    uniform_rate = selection.uniform_rate
    write_trial = trials.write_trial
    store_baseline_weights = artifacts.store_baseline_weights
    # creating the study, resuming it
    create = creation.create
    check_resumable = creation.check_resumable
    update_budget = creation.update_budget
    baseline_weights_file = artifacts.baseline_weights_file
    finetuned_state = artifacts.finetuned_state

    def __init__(self, study: optuna.Study, home: Path | None = None) -> None:
        """``home``: the folder of the study's storage file, if it has one: where the baseline's weights
        and artifacts are looked for when the absolute paths the study recorded are gone (a moved folder)."""
        self.study, self.home = study, home

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def attrs(self) -> dict[str, Any]:
        """The study's attributes in the current layout (:func:`.schema.migrate`)."""
        return migrate(self.study.user_attrs, self.study.study_name)

    def write_attrs(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.study.set_user_attr(key, value)

    @property
    def is_new(self) -> bool:
        """True until :meth:`create` has written the study's settings."""
        return GROUPS not in self.attrs

    @property
    def settings(self) -> SearchSettings:
        """The study's :class:`~autoprune.SearchSettings`."""
        attrs = self.attrs
        if "max_accuracy_drop" not in attrs:
            raise AutopruneError(f"study {self.name!r} is not an autoprune study: it records no search settings")
        return SearchSettings.from_attrs(attrs)

    @property
    def space(self) -> PlanSpace:
        """The study's :class:`~autoprune.plan.PlanSpace`: its settings, groups and their searched ranges."""
        return PlanSpace(self.settings, tuple(self.groups), self.rate_limits)

    @property
    def groups(self) -> list[str]:
        return list(self.attrs.get(GROUPS, []))

    @property
    def max_accuracy_drop(self) -> float:
        return self.settings.max_accuracy_drop

    @property
    def score_name(self) -> str:
        """What the study's ``accuracy`` holds: its task's score (``accuracy``, ``map``, ``miou``, a plugin's)."""
        return self.attrs.get(SCORE, "accuracy")

    @property
    def score_label(self) -> str | None:
        """The task's own label of its score, with its unit (``mean IoU, points``), if it has one."""
        return self.attrs.get(SCORE_LABEL)

    @property
    def objectives(self) -> list[str]:
        return self.settings.objectives

    @property
    def size_objective(self) -> str:
        """The measure drawn against accuracy: the first objective other than accuracy."""
        return next((o for o in self.objectives if o != "accuracy"), "flops")

    @property
    def size_objective_measure(self) -> str:
        """The size measure counted for every plan that stands in for the size objective (latency: FLOPs)."""
        return "params" if self.size_objective in ("params", "nonzero_params", "size_bytes") else "flops"

    @property
    def baseline(self) -> dict[str, float]:
        """The unpruned model's metrics (``accuracy``, ``flops``, ``params``, maybe ``latency``)."""
        attrs = self.attrs
        return {m: attrs[f"baseline_{m}"] for m in self.metric_names if f"baseline_{m}" in attrs}

    @property
    def source(self) -> dict[str, Any]:
        """What the study knows of its baseline's origin (:data:`.schema.SOURCE_KEYS`)."""
        return {k: v for k, v in self.attrs.items() if k in SOURCE_KEYS}

    @property
    def run(self) -> dict[str, Any]:
        """What the study ran on: ``machine``, ``versions``, ``splits``, ``trial_device`` (empty for studies made before
        autoprune recorded them)."""
        return {k: v for k, v in self.attrs.items() if k in RUN_KEYS}

    def summary_attrs(self) -> dict[str, Any]:
        """The study's attributes short enough for a table: all but the per-group and per-trial ones."""
        return {k: v for k, v in self.attrs.items() if k not in BULKY}

    @property
    def rate_limits(self) -> dict[str, float]:
        """Each group's largest searched rate: ``rate_max``, unless a study warm-started from sensitivity
        narrowed it (curves measured for a study with another warm start do not change its space)."""
        settings = self.settings
        limits = (self.attrs.get(RATE_LIMITS) or {}) if settings.warm_start == "sensitivity" else {}
        return {g: limits.get(g, settings.rate_max) for g in self.groups}

    def write_sensitivity(self, rows: list[dict[str, Any]], limits: dict[str, float]) -> None:
        self.write_attrs({RATE_LIMITS: limits, SENSITIVITY: rows})

    # -- trials -------------------------------------------------------------------------

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def completed(self) -> list[FrozenTrial]:
        return self.trials(states=(TrialState.COMPLETE,))

    @functools.cached_property  # objectives and constraints are fixed when a study is created
    def metric_names(self) -> list[str]:
        """The built-in metrics, then the study's objectives and constraints that are not among them."""
        settings = self.settings
        return list(dict.fromkeys((*METRICS, *settings.objectives, *settings.bounds)))

    @functools.cached_property
    def constraint_names(self) -> list[str]:
        """What every feasible trial recorded: the accuracy budget, then each ``[constraints]`` metric."""
        return [CONSTRAINT, *self.settings.bounds]

    def metrics(self, trial: FrozenTrial) -> dict[str, float]:
        """The trial's recorded metrics (NaN where one was not measured)."""
        return {m: trials.value(trial, m) for m in self.metric_names}

    def plan(self, trial: FrozenTrial) -> Plan:
        """The :class:`~autoprune.plan.Plan` of a trial, decoded from its parameters by the study's space
        (a global trial's per-group rates from the plan it recorded)."""
        resolved = trials.given_plan(trial)
        if (trials.scope(trial) == "global" or ALLOCATION_LEVEL in trial.params) and resolved is None:
            raise AutopruneError(f"trial {trial.number} of {self.settings.scope} scope did not record its plan")
        return self.space.decode(trial.params, resolved)

    def enqueue(self, params: dict[str, Any], exact: Plan | None = None, replaces: int | None = None) -> None:
        """Queue a trial of ``params`` (unless one with the same parameters exists); ``exact``: the plan
        it prunes where its parameters, on the grid, only approach it (a baseline found by bisection);
        ``replaces``: the number of the closed duplicate it stands in for."""
        attrs = {} if exact is None else {PLAN_ATTR: trials.exact_plan(exact)}
        if replaces is not None:
            attrs[REPLACES] = replaces
        self.study.enqueue_trial(params, user_attrs=attrs or None, skip_if_exists=True)


def open_study(storage: str | optuna.storages.BaseStorage, name: str | None = None) -> StudyRecord:
    """The record of study ``name`` in ``storage`` (the only study there when ``name`` is None)."""
    path = storage_file(storage)
    if path is not None and not path.is_file():
        raise AutopruneError(f"the storage {storage!r} names {str(path)!r}, which does not exist")
    opened = open_storage(storage)  # a one-line error for a URL that cannot be opened
    try:
        names = optuna.get_all_study_names(opened)
    except Exception as exc:  # noqa: BLE001 - driver errors of a server that went away
        raise AutopruneError(f"cannot read the storage {storage!r}: {type(exc).__name__}: {exc}") from None
    if not names:
        raise AutopruneError(f"the storage {storage!r} holds no study")
    if name is None:
        if len(names) != 1:
            raise AutopruneError(f"the storage holds studies {names}; choose one by name (--study NAME)")
        name = names[0]
    elif name not in names:
        raise unknown_name("study", name, names)
    return StudyRecord(optuna.load_study(study_name=name, storage=opened), home=path.parent if path else None)
