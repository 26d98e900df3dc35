"""The study record: what an autoprune study keeps in its Optuna storage, read and written here alone.

An autoprune study is an ordinary Optuna study; this module owns every key it
stores, so the search, the report, the export and :class:`autoprune.Study` agree on
what a study holds, and any Optuna client can read it.

Study user attributes:

- ``sensitivity`` (per-group curves), ``rate_limits`` (each group's searched
  range), ``references`` (the uniform and global baselines, found by bisection)
  and ``warm_started``, written before the trials; ``finetuned_finalists`` (the best
  feasible plans fine-tuned, with the recipe and the rank correlation), after them;
- the search settings, one attribute per :class:`~autoprune.SearchSettings` field;
- ``groups``: the prunable groups, in layer order;
- ``baseline_accuracy``, ``baseline_flops``, ``baseline_params`` (and
  ``baseline_latency`` when latency is an objective);
- where the baseline came from, as far as it is known: ``model``, ``model_params``,
  ``num_classes``, ``in_channels`` (a registered model), ``dataset``,
  ``dataset_params`` (a registered dataset), ``baseline_weights`` (the absolute
  path of the weights file) or ``baseline_artifact`` with ``artifact_store`` (the
  weights as an Optuna artifact), ``baseline_sha256`` (a fingerprint of the
  weights), and ``autoprune_version``;
- what the study ran on: ``machine`` (processor, threads, system, Python),
  ``versions`` (autoprune, torch, torch-pruning, optuna) and ``splits`` (samples in
  each split of the data), written when the study is created.

Trial parameters: ``<group>.rate`` and ``<group>.method``. Trial user attributes:
the metrics (``accuracy``, ``accuracy_drop``, ``flops``, ``params``, ``latency``)
and timings (``prune_seconds``, ``recalibrate_seconds``, ``eval_seconds``,
``measure_seconds``), ``evaluated`` (validation images counted: fewer than the
split when the count stopped early, with a drop certain or likely to exceed the
budget); a failed trial's ``fail_reason``. The constraint
``accuracy_drop`` holds ``accuracy_drop - max_accuracy_drop``.

A trial is feasible when it completed and recorded every constraint of the study
with a value <= 0 (Optuna's rule, which also refuses trials without constraints).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import AutopruneError, unknown_name
from ..metrics import metric_direction
from ..plan import GLOBAL_RATE, Plan, PlanSpace
from ..settings import SearchSettings, setting_key
from ..storage import open_storage, storage_file

#: Trial metrics, in the order tables show them.
METRICS = ("accuracy", "accuracy_drop", "flops", "params", "latency", "sparsity", "nonzero_params", "size_bytes")
TIMINGS = ("prune_seconds", "recalibrate_seconds", "eval_seconds", "measure_seconds")
#: Validation images a trial's count saw (fewer than the split when it stopped early).
EVALUATED = "evaluated"
#: Why a failed trial failed (the error's message).
FAIL_REASON = "fail_reason"
#: Why a trial was closed unscored (PRUNED): the study had its trials when it started.
SKIPPED = "skipped"
#: The constraint every trial records: ``accuracy_drop - max_accuracy_drop`` (feasible when <= 0).
CONSTRAINT = "accuracy_drop"
GROUPS = "groups"
#: What the study says about where its baseline came from.
#: What a study learns before its trials, written once: the per-group sensitivity
#: curves, each group's searched range, the simple baselines, and that its warm
#: starts were enqueued.
SENSITIVITY, RATE_LIMITS, REFERENCES, WARM_STARTED = "sensitivity", "rate_limits", "references", "warm_started"
#: Written after the trials: the best feasible plans fine-tuned.
FINALISTS = "finetuned_finalists"
#: The latency table a study predicts latency with, and the check of its predictions
#: against timings of the best plans.
LATENCY_TABLE, LATENCY_CHECK = "latency_table_measured", "latency_check"
#: What the study ran on, written when it is created.
RUN_KEYS = ("machine", "versions", "splits")
SOURCE_KEYS = (
    "model",
    "model_params",
    "num_classes",
    "in_channels",
    "dataset",
    "dataset_params",
    "baseline_weights",
    "baseline_artifact",
    "artifact_store",
    "baseline_sha256",
    "autoprune_version",
)

#: The user attribute of a global-scope trial that holds its resolved per-group plan.
PLAN_ATTR = "plan"
#: Settings a study made before they existed was searched without: their value then, not today's default.
LEGACY_SETTINGS = {"reconstruct": False}


class StudyRecord:
    """Reads and writes the autoprune keys of an ``optuna.Study``."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def attrs(self) -> dict[str, Any]:
        return self.study.user_attrs

    # -- the study -------------------------------------------------------------------

    @property
    def is_new(self) -> bool:
        """True until :meth:`create` has written the study's settings."""
        return GROUPS not in self.attrs

    def create(
        self,
        settings: SearchSettings,
        groups: list[str],
        baseline: dict[str, float],
        source: dict[str, Any],
        extra: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
    ) -> None:
        """Write a new study's settings, baseline metrics, source, what it runs on (``run``,
        keys of :data:`RUN_KEYS`), and last its groups.

        ``extra`` holds user attributes of the caller's own (the CLI notes the study
        file); they may not use a key the record owns. ``groups`` is written last,
        so a study interrupted while it is being created is still new.
        """
        run = dict(run or {})
        for given, allowed, what in ((source, SOURCE_KEYS, "source"), (run, RUN_KEYS, "run")):
            unknown = set(given) - set(allowed)
            if unknown:
                raise ValueError(f"not a {what} key of the study record: {sorted(unknown)}")
        extra = dict(extra or {})
        owned = {
            *settings.to_attrs(),
            GROUPS,
            *SOURCE_KEYS,
            *RUN_KEYS,
            *(f"baseline_{m}" for m in METRICS),
            SENSITIVITY,
            RATE_LIMITS,
            REFERENCES,
            WARM_STARTED,
            FINALISTS,
            LATENCY_TABLE,
            LATENCY_CHECK,
        }
        taken = sorted(set(extra) & owned)
        if taken:
            raise AutopruneError(f"study_attrs cannot set {', '.join(taken)}: the study record owns them")
        values = {**extra, **settings.to_attrs(), **source, **run, **{f"baseline_{k}": v for k, v in baseline.items()}}
        for key, value in values.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise AutopruneError(f"{key}={value!r} cannot be stored in an Optuna study (not JSON)") from None
        for key, value in values.items():
            self.study.set_user_attr(key, value)
        self.study.set_user_attr(GROUPS, list(groups))

    def check_resumable(
        self, settings: SearchSettings, groups: list[str], source: dict[str, Any] | None = None
    ) -> None:
        """Refuse to resume with other settings, groups or baseline than the study's, naming every difference."""
        conflicts = [(setting_key(name), before, now) for name, before, now in settings.resume_conflicts(self.settings)]
        if self.groups != list(groups):
            conflicts.append((GROUPS, self.groups, list(groups)))
        stored = self.source
        for key in ("model", "model_params", "dataset", "dataset_params"):
            if source is not None and key in stored and stored.get(key) != source.get(key):
                conflicts.append((key, stored.get(key), source.get(key)))
        if conflicts:
            listed = ", ".join(f"{key}={before!r} (not {now!r})" for key, before, now in conflicts)
            raise AutopruneError(
                f"study {self.name!r} was created with {listed}; "
                "use another study name (or output folder) for new settings"
            )
        sha, now = stored.get("baseline_sha256"), (source or {}).get("baseline_sha256")
        if sha and now and now != sha:
            raise AutopruneError(
                f"study {self.name!r} was searched on a baseline with other weights (their SHA-256 fingerprint "
                "differs); resuming would mix two models: use another study name (or output folder)"
            )

    def update_budget(self, settings: SearchSettings) -> None:
        """Record the settings a resumed study may change (its trial budget and timeout)."""
        for key, value in settings.to_attrs().items():
            if settings.is_resumable(key) and self.attrs.get(key) != value:
                self.study.set_user_attr(key, value)

    @property
    def settings(self) -> SearchSettings:
        """The study's :class:`~autoprune.SearchSettings`."""
        attrs = self.attrs
        if "max_accuracy_drop" not in attrs:
            raise AutopruneError(f"study {self.name!r} is not an autoprune study: it records no search settings")
        return SearchSettings.from_attrs({**LEGACY_SETTINGS, **attrs})

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
        return self.attrs.get("score", "accuracy")

    @property
    def score_label(self) -> str:
        """The score as figures name it, with its unit (``top-1 accuracy, %``, ``mean IoU, points``)."""
        return self.attrs.get(
            "score_label", "top-1 accuracy, %" if self.score_name == "accuracy" else f"{self.score_name}, points"
        )

    def score_text(self, value: float) -> str:
        """A score as the study's summaries print it: ``93.50 %`` for accuracy, ``41.20`` (points) otherwise."""
        return f"{value:.2f} %" if self.score_name == "accuracy" else f"{value:.2f}"

    @property
    def importances(self) -> list[str]:
        return list(self.settings.importances)

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
        return {m: self.attrs[f"baseline_{m}"] for m in self.metric_names if f"baseline_{m}" in self.attrs}

    @property
    def source(self) -> dict[str, Any]:
        """What the study knows of its baseline's origin (see the module docstring)."""
        return {k: self.attrs[k] for k in SOURCE_KEYS if k in self.attrs}

    @property
    def run(self) -> dict[str, Any]:
        """What the study ran on: ``machine``, ``versions``, ``splits`` (empty for studies made before
        autoprune recorded them)."""
        return {k: self.attrs[k] for k in RUN_KEYS if k in self.attrs}

    # -- what the study learns before its trials ----------------------------------------

    @property
    def sensitivity(self) -> list[dict[str, Any]] | None:
        """Rows ``group, rate, accuracy_drop, flops, params, evaluated``, or None before they are measured."""
        return self.attrs.get(SENSITIVITY)

    @property
    def rate_limits(self) -> dict[str, float]:
        """Each group's largest searched rate: ``rate_max``, unless a study warm-started from sensitivity
        narrowed it (curves measured for a study with another warm start do not change its space)."""
        settings = self.settings
        limits = (self.attrs.get(RATE_LIMITS) or {}) if settings.warm_start == "sensitivity" else {}
        rate_max = settings.rate_max
        return {g: limits.get(g, rate_max) for g in self.groups}

    def write_sensitivity(self, rows: list[dict[str, Any]], limits: dict[str, float]) -> None:
        self.study.set_user_attr(RATE_LIMITS, limits)
        self.study.set_user_attr(SENSITIVITY, rows)

    @property
    def references(self) -> dict[str, dict[str, Any]] | None:
        """The uniform and global baselines: ``{"uniform": {"rate", "accuracy", "flops", ...}, "global": ...}``."""
        return self.attrs.get(REFERENCES)

    def write_references(self, references: dict[str, dict[str, Any]]) -> None:
        self.study.set_user_attr(REFERENCES, references)

    @property
    def warm_started(self) -> bool:
        return bool(self.attrs.get(WARM_STARTED))

    def mark_warm_started(self) -> None:
        self.study.set_user_attr(WARM_STARTED, True)

    @property
    def finalists(self) -> dict[str, Any] | None:
        """``{"recipe": {...}, "trials": [{"trial", "accuracy", "finetuned_accuracy"}], "spearman"}`` or None."""
        return self.attrs.get(FINALISTS)

    def write_finalists(self, finalists: dict[str, Any]) -> None:
        self.study.set_user_attr(FINALISTS, finalists)

    @property
    def latency_table(self) -> dict[str, Any] | None:
        """The latency table (``autoprune.searcher.LatencyTable`` as a dict) the study predicts with, or None."""
        return self.attrs.get(LATENCY_TABLE)

    def write_latency_table(self, table: dict[str, Any]) -> None:
        self.study.set_user_attr(LATENCY_TABLE, table)

    @property
    def latency_check(self) -> list[dict[str, Any]] | None:
        """``[{"trial", "predicted_ms", "measured_ms"}]``: the table's predictions against timings, or None."""
        return self.attrs.get(LATENCY_CHECK)

    def write_latency_check(self, rows: list[dict[str, Any]]) -> None:
        self.study.set_user_attr(LATENCY_CHECK, rows)

    def comparison(self, trial: FrozenTrial) -> dict[str, Any] | None:
        """The trial's reduction of the size objective next to the better simple baseline's.

        ``{"measure", "reduction", "baseline": "uniform" | "global", "baseline_reduction",
        "uniform_reduction", "global_reduction", "ratio"}``, or None before the
        baselines are measured.
        """
        references, measure = self.references, self.size_objective
        base = self.baseline.get(measure)
        if not references or not base or measure not in trial.user_attrs:
            return None
        reductions = {
            k: (base / r[measure] if r.get("rate") is not None and r.get(measure) else 1.0)
            for k, r in references.items()
        }
        better = max(reductions, key=lambda k: reductions[k])
        reduction = base / trial.user_attrs[measure]
        return {
            "measure": measure,
            "reduction": reduction,
            "baseline": better,
            "baseline_reduction": reductions[better],
            "ratio": reduction / reductions[better],
            **{f"{k}_reduction": v for k, v in reductions.items()},
        }

    # -- the baseline's weights ---------------------------------------------------------

    def store_baseline_weights(self, state_file: Path, artifact_store: Path) -> None:
        """Keep the baseline's weights as an Optuna artifact of the study."""
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        store_dir = Path(artifact_store).resolve()
        store_dir.mkdir(parents=True, exist_ok=True)
        artifact_id = upload_artifact(
            study_or_trial=self.study, file_path=str(state_file), artifact_store=FileSystemArtifactStore(str(store_dir))
        )
        self.study.set_user_attr("baseline_artifact", artifact_id)
        self.study.set_user_attr("artifact_store", str(store_dir))

    def baseline_weights_file(self, workdir: Path) -> Path | None:
        """A file holding the baseline's state_dict (downloaded into ``workdir`` if it is an artifact)."""
        source = self.source
        if "baseline_weights" in source:
            return Path(source["baseline_weights"])
        if "baseline_artifact" in source:
            from optuna.artifacts import FileSystemArtifactStore, download_artifact

            store = Path(source["artifact_store"])
            if not store.is_dir():
                raise AutopruneError(f"the artifact store {str(store)!r} of study {self.name!r} is gone")
            target = Path(workdir) / "baseline.pt"
            download_artifact(
                artifact_store=FileSystemArtifactStore(str(store)),
                artifact_id=source["baseline_artifact"],
                file_path=str(target),
            )
            return target
        return None

    # -- trials -----------------------------------------------------------------------

    def write_trial(self, trial: optuna.Trial, metrics: dict[str, float]) -> list[float] | float:
        """Record a trial's metrics and constraints; return its objective value(s).

        Each ``[constraints]`` bound is recorded under the metric's name, as
        ``value - bound`` for a metric to minimize and ``bound - value`` for one to
        maximize, so it is met when <= 0, as the accuracy budget is.
        """
        named = (*self.metric_names, *TIMINGS, EVALUATED)
        for key in named:
            if key in metrics:
                trial.set_user_attr(key, metrics[key])
        for key, value in metrics.items():  # a task's other scores (map_50), and its score under its own name
            if key not in named and isinstance(value, (int, float)):
                trial.set_user_attr(key, value)
        if self.score_name != "accuracy":
            trial.set_user_attr(self.score_name, metrics["accuracy"])
            trial.set_user_attr(f"{self.score_name}_drop", metrics["accuracy_drop"])
        trial.set_constraint(CONSTRAINT, metrics["accuracy_drop"] - self.max_accuracy_drop)
        bounds = self.settings.bounds if len(self.constraint_names) > 1 else {}
        for name, bound in bounds.items():
            over = metrics[name] - bound
            trial.set_constraint(name, -over if metric_direction(name) == "maximize" else over)
        values = [float(metrics[o]) for o in self.objectives]
        return values[0] if len(values) == 1 else values

    @staticmethod
    def value(trial: FrozenTrial, name: str, default: Any = math.nan) -> Any:
        """What trial ``trial`` recorded as ``name`` (a metric, a timing, ``evaluated``), or ``default``."""
        return trial.user_attrs.get(name, default)

    @staticmethod
    def write_skipped(trial: optuna.Trial, reason: str) -> None:
        """Record why a trial was closed without being scored (it started after the study had its trials)."""
        trial.set_user_attr(SKIPPED, reason)

    def summary_attrs(self) -> dict[str, Any]:
        """The study's attributes short enough for a table: all but the per-group and per-trial ones."""
        bulky = {GROUPS, SENSITIVITY, RATE_LIMITS, REFERENCES, FINALISTS, LATENCY_TABLE}
        return {k: v for k, v in self.attrs.items() if k not in bulky}

    @staticmethod
    def write_failure(trial: optuna.Trial, error: Exception) -> None:
        """Record why a trial failed."""
        trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {error}")

    @staticmethod
    def fail_reason(trial: FrozenTrial) -> str | None:
        return trial.user_attrs.get(FAIL_REASON)

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
        return {m: trial.user_attrs.get(m, math.nan) for m in self.metric_names}

    def is_feasible(self, trial: FrozenTrial) -> bool:
        """Completed, with every constraint of the study recorded and <= 0."""
        constraints = trial.constraints
        return (
            trial.state == TrialState.COMPLETE
            and all(c in constraints for c in self.constraint_names)
            and all(v <= 0 for v in constraints.values())
        )

    def feasible(self) -> list[FrozenTrial]:
        return [t for t in self.completed() if self.is_feasible(t)]

    def pareto_trials(self) -> list[FrozenTrial]:
        """The feasible trials no other feasible trial dominates, sorted by the size objective.

        Multi-objective: on the study's objectives and directions. Single objective:
        on accuracy (higher) and the objective (lower), so the front shows the trade-off.
        """
        feasible = self.feasible()
        if len(self.study.directions) > 1:
            signs = [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in self.study.directions]
            points = {t.number: [s * v for s, v in zip(signs, t.values)] for t in feasible}
        else:
            points = {t.number: [-t.user_attrs["accuracy"], t.value] for t in feasible}
        front = [t for t in feasible if not any(_dominates(points[o.number], points[t.number]) for o in feasible)]
        key = self.size_objective
        return sorted(front, key=lambda t: (t.user_attrs.get(key, math.inf), t.number))

    def chosen_trial(self) -> FrozenTrial | None:
        """The trial a search delivers: the feasible trial with the lowest objective (the more
        accurate of equals); in a multi-objective study, the feasible Pareto point with the
        highest accuracy. Either way it is on the Pareto front."""
        if len(self.study.directions) > 1:
            front = self.pareto_trials()
            return max(front, key=lambda t: (t.user_attrs["accuracy"], -t.number)) if front else None
        feasible = self.feasible()
        return min(feasible, key=lambda t: (t.value, -t.user_attrs["accuracy"], t.number)) if feasible else None

    def trial(self, number: int | None = None) -> FrozenTrial:
        """Completed trial ``number``, or the chosen trial; a clear error otherwise."""
        if number is None:
            chosen = self.chosen_trial()
            if chosen is None:
                raise AutopruneError(
                    f"study {self.name!r} has no feasible trial; choose one by its number "
                    "(--trial N on the command line)"
                )
            return chosen
        done = {t.number: t for t in self.completed()}
        if number not in done:
            if not done:
                raise AutopruneError(f"study {self.name!r} has no completed trial")
            raise AutopruneError(
                f"trial {number} is not a completed trial of {self.name!r}; completed: {min(done)}..{max(done)}"
            )
        return done[number]

    @staticmethod
    def scope(trial: FrozenTrial) -> str:
        """ "global" for a trial of global scope, else "local"."""
        return "global" if GLOBAL_RATE in trial.params else "local"

    def plan(self, trial: FrozenTrial) -> Plan:
        """The :class:`~autoprune.plan.Plan` of a trial, decoded from its parameters by the study's space
        (a global trial's per-group rates from the plan it recorded)."""
        resolved = trial.user_attrs.get(PLAN_ATTR)
        if self.scope(trial) == "global" and resolved is None:
            raise AutopruneError(f"trial {trial.number} of global scope did not record its plan")
        return self.space.decode(trial.params, resolved)

    @staticmethod
    def write_plan(trial: optuna.Trial, plan: Plan) -> None:
        """Record what a trial's parameters do not say: a global plan's per-group rates and methods
        (an enqueued baseline's were recorded when it was enqueued)."""
        if plan.scope == "global" and PLAN_ATTR not in trial.user_attrs:
            trial.set_user_attr(PLAN_ATTR, {"rates": dict(plan.rates), "methods": dict(plan.methods)})

    @staticmethod
    def given_plan(trial: optuna.Trial) -> dict[str, Any] | None:
        """The exact ``{"rates", "methods"}`` a trial was enqueued with (a baseline's), or None."""
        return trial.user_attrs.get(PLAN_ATTR)

    def enqueue(self, params: dict[str, Any], exact: Plan | None = None) -> None:
        """Queue a trial of ``params`` (unless one with the same parameters exists); ``exact``: the plan
        it prunes where its parameters, on the grid, only approach it (a baseline found by bisection)."""
        attrs = None if exact is None else {PLAN_ATTR: {"rates": dict(exact.rates), "methods": dict(exact.methods)}}
        self.study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)

    def uniform_rate(self, trial: FrozenTrial) -> float | None:
        """The rate of a plan that uses one rate and one method in every group, else None."""
        if self.scope(trial) == "global":
            return None
        plan = self.plan(trial)
        rates, methods = set(plan.rates.values()), set(plan.methods.values())
        return rates.pop() if len(rates) == 1 and len(methods) == 1 and set(plan.rates) == set(self.groups) else None


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


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
    return StudyRecord(optuna.load_study(study_name=name, storage=opened))
