"""The search: per-group pruning rates and importances as Optuna hyperparameters.

A trial prunes a fresh copy of the baseline with the plan the sampler proposes
(:mod:`.space`), recalibrates its BatchNorm statistics on fixed training batches
and measures it on the validation split (:mod:`.evaluation`). The accuracy-drop
budget is the constraint ``accuracy_drop - max_accuracy_drop <= 0``, set with
``trial.set_constraint``; the objective (FLOPs, parameters or latency; or two or
three of them with accuracy) is optimized among feasible trials by Optuna's TPE
sampler (Bergstra et al., NeurIPS 2011; with constraints as in Optuna's c-TPE
support). The study record (:mod:`autoprune.results.record`) is the search's only
output: any Optuna client can read it.

Before its trials a study measures what guides and judges the search
(:func:`prepare`): per-group sensitivity curves, which bound each group's range
and give warm-start plans (:mod:`.sensitivity`), and the uniform-rate and
global-pruning baselines (:mod:`.references`). The uniform baseline and the
warm-start plans are the first trials; the sampler then moves each group from them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ..batches import calibration_batches
from ..checkpoint import atomic_save
from ..devices import resolve_device
from ..engine import (
    group_layers,
    group_scores,
    prunable_groups,
    resolve_importance,
    resolve_weight_importance,
    weight_scores,
)
from ..errors import AutopruneError, PluginError, PruningError, SearchInterrupted, unknown_name
from ..metrics import metric_direction
from ..plan import Plan, PlanSpace
from ..plan.space import ALLOCATION_LEVELS
from ..provenance import environment, fingerprint, provenance, split_sizes
from ..results.record import StudyRecord
from ..settings import FINETUNE, MOVED_TO_OPTIONS, SearchSettings, TrainSettings, check_finalists
from ..storage import (
    GRACE_FACTOR,
    fail_stale_trials,
    fail_trials_running_here,
    open_storage,
    storage_failure,
    storage_file,
)
from ..tasks import Task
from ..zoo import dataset_task, list_metrics
from .allocation import WARM_LEVELS, Allocation
from .duplicates import PlanKeys, close_if_duplicate
from .evaluation import Evaluator, searched_groups
from .feasibility import check_bounds, resolution_warning
from .finalists import fine_tune_finalists
from .finetuned import FinetunedBudget, RungPruner, recalibrated_allowance
from .latency import LatencyTable, check_latency_settings, check_table
from .progress import SearchProgress
from .references import GlobalRanking, find_references
from .refinement import LocalRefinement
from .samplers import make_sampler
from .sensitivity import measure_sensitivity, rate_limits, warm_start_plans

_logger = logging.getLogger("autoprune")

#: Trials a sampler draws at random before it models the results (warm starts come first).
STARTUP_TRIALS = 10


@dataclass
class SearchResult:
    """The outcome of :func:`search`: the study, its record, and the chosen plan."""

    study: optuna.Study
    baseline: nn.Module
    example_inputs: torch.Tensor
    calibration: list = field(default_factory=list, repr=False)
    task: Task | None = field(default=None, repr=False)
    finetuned: FinetunedBudget | None = field(default=None, repr=False)
    _best_model: nn.Module | None = field(default=None, repr=False)

    @property
    def record(self) -> StudyRecord:
        return StudyRecord(self.study)

    @property
    def best_trial(self) -> FrozenTrial | None:
        """The chosen feasible trial (:meth:`StudyRecord.chosen_trial`), or None."""
        return self.record.chosen_trial()

    @property
    def best_plan(self) -> Plan | None:
        """The :class:`~autoprune.plan.Plan` of the best trial (``.rates``, ``.methods``, ...)."""
        trial = self.best_trial
        return None if trial is None else self.record.plan(trial)

    @property
    def best_model(self) -> nn.Module | None:
        """The baseline pruned with :attr:`best_plan` and recalibrated, rebuilt on first use; with a fine-tuned
        budget, that model with the chosen trial's fine-tuned weights."""
        trial = self.best_trial
        if self._best_model is None and trial is not None:
            model = self.best_plan.apply(self.baseline, self.example_inputs, self.calibration, task=self.task)
            state = self.finetuned.weights(trial) if self.finetuned is not None else None
            if state is None:
                state = self.record.finetuned_state(trial)
            if state is not None:
                model.load_state_dict(state)
            self._best_model = model
        return self._best_model

    @property
    def failed_trials(self) -> list[FrozenTrial]:
        return self.record.trials(states=(TrialState.FAIL,))


def search(
    model: nn.Module,
    data: Any,
    settings: SearchSettings | None = None,
    *,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    artifacts: str | Path | None = None,
    progress: bool = False,
    finetune: TrainSettings = FINETUNE,
    study_attrs: dict[str, Any] | None = None,
    phase: str = "all",
    **overrides: Any,
) -> SearchResult:
    """Search per-group rates and importances that minimize the objective within the accuracy budget.

    Args:
        model: the trained baseline (not modified).
        data: an object with ``.train``, ``.val``, ``.num_classes``, ``.input_shape``
            (what dataset factories return); ``.test`` is never read.
        settings: a :class:`~autoprune.SearchSettings`; its fields can also be given
            as keyword arguments (``max_accuracy_drop=1.0, trials=100``), which
            override the object's; a metric's own options go in ``metric_options``
            (``{"robust_accuracy": {"corruption_images": 500}}``).
        storage: an Optuna storage URL (``sqlite:///study.db``, PostgreSQL...) or
            object; None keeps the study in memory.
        study_name: the study's name in the storage; the same name resumes it. None: the model's and
            dataset's registered names (``small_cnn-digits``; the model's class name where it has none).
        artifacts: a folder for the study's files (Optuna's ``FileSystemArtifactStore``);
            default: ``artifacts/`` beside an SQLite database. The baseline's weights
            are kept there unless they came from a checkpoint file
            (:func:`autoprune.load_checkpoint`), whose path is recorded instead.
        progress: show a progress bar (trials done, how many are feasible, the best reduction so far).
        finetune: the recipe that fine-tunes the finalists (``finalists`` setting).
        study_attrs: user attributes of your own, recorded when the study is created.
        phase: ``"all"``; ``"prepare"``: stop once the study is recorded with its baselines and warm starts
            queued (what a launcher of several workers does first, once); ``"trials"``: run the trials
            only, leaving the finalists and the latency check to whoever ends the search.

    A resumed study (same storage and name) runs only the missing trials and must
    have the same settings, except ``trials`` and ``timeout``. Several workers
    sharing one storage stop together once the study holds ``trials`` completed trials.
    """
    settings = _settings(settings, overrides)
    check_finalists(settings, finetune)
    if phase not in PHASES:
        raise AutopruneError(f"phase must be one of {', '.join(map(repr, PHASES))}, got {phase!r}")
    where = {"storage": storage, "study_name": study_name, "artifacts": artifacts, "study_attrs": study_attrs}
    record, evaluator = open_search(_on_device(model, settings), data, settings, finetune=finetune, **where)
    budget = None
    if settings.budget == "finetuned":
        budget = FinetunedBudget(evaluator, data, finetune, record, _artifact_dir(storage, artifacts))
    ranking = GlobalRanking(evaluator)
    prepare(record, evaluator, ranking, budget)
    allocation = study_allocation(record, evaluator)
    result = SearchResult(
        record.study, evaluator.baseline, evaluator.example, evaluator.calibration, evaluator.task, budget
    )
    if phase != "prepare":
        keys = plan_keys(record, evaluator, ranking, allocation)
        if settings.refine:
            record.study.sampler = LocalRefinement(record.study.sampler, keys, settings)
        objective = _objective(record, evaluator, ranking, keys, budget, allocation)
        with _interrupts_as(result, record, objective):
            _run_trials(record, objective, settings, progress)
    if phase == "all":
        _after_trials(record, evaluator, data, finetune)
    return result


#: What :func:`search` runs: everything, only the study's preparation, or only its trials.
PHASES = ("all", "prepare", "trials")


def _after_trials(record: StudyRecord, evaluator: Evaluator, data: Any, finetune: TrainSettings) -> None:
    """Once the trials are done: the finalists fine-tuned, and the latency table checked on the best plans."""
    if evaluator.settings.finalists:
        fine_tune_finalists(record, evaluator, data, finetune)
    if evaluator.latency_table is not None and record.feasible():
        record.latency_check = check_table(record, evaluator)


def _on_device(model: nn.Module, settings: SearchSettings) -> nn.Module:
    """The baseline where the study computes (``settings.device``): the model, or a copy moved there, so the
    caller's model stays where it is."""
    device = resolve_device(settings.device)
    return model if next(model.parameters()).device == device else copy.deepcopy(model).to(device)


@contextlib.contextmanager
def _interrupts_as(result: SearchResult, record: StudyRecord | None = None, objective=None) -> Iterator[None]:
    """Ctrl-C during the trials raised as :class:`SearchInterrupted` carrying ``result``, with no trial of
    this process left RUNNING: Optuna fails the trial its objective was running, and :func:`_fail_if_running`
    one that the Ctrl-C caught while Optuna created it or recorded its end. A storage that failed is an
    :class:`AutopruneError` of one line (:func:`~autoprune.storage.storage_failure`)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        _fail_if_running(record, objective)
        raise SearchInterrupted(result) from exc
    except (UnboundLocalError, AssertionError) as exc:
        # Where its tell failed, Optuna's cleanup of a trial masks the cause with an error of its own (a
        # name the failed call never set, or an "assert False"), the trial still RUNNING: a Ctrl-C, or a
        # storage that failed.
        cause = exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            _fail_if_running(record, objective)
            raise SearchInterrupted(result) from cause
        if isinstance(cause, optuna.exceptions.StorageInternalError):
            _fail_if_running(record, objective)
            raise storage_failure(cause) from None
        raise
    except optuna.exceptions.StorageInternalError as exc:
        _fail_if_running(record, objective)
        raise storage_failure(exc) from None


def _fail_if_running(record: StudyRecord | None, objective) -> None:
    """Fail the trials an interrupt left RUNNING in this process: each one its storage saw it set running
    (:func:`~autoprune.storage.fail_trials_running_here`), and the one ``objective`` last started (for a
    storage object autoprune did not open)."""
    fail_trials_running_here()
    trial = getattr(objective, "current", None)
    if record is None or trial is None:
        return
    storage = record.study._storage
    with contextlib.suppress(Exception):  # the storage may be gone with the interrupt: its heartbeat then fails it
        if storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _objective(
    record: StudyRecord,
    evaluator: Evaluator,
    ranking: GlobalRanking,
    keys: PlanKeys,
    budget: FinetunedBudget | None = None,
    allocation: Allocation | None = None,
):
    """Optuna's objective: a plan from the study's space (each group within its range), scored (after
    recalibration, or rung by rung of a fine-tuned ``budget``) and recorded; a plan another trial holds
    is not scored again (:mod:`.duplicates`)."""
    space, trials = evaluator.space.with_limits(record.rate_limits), evaluator.settings.trials
    seed = evaluator.settings.seed

    def objective(trial: optuna.Trial) -> float | list[float]:
        objective.current = trial  # what an interrupt fails if Optuna could not
        _skip_if_full(record, trial, trials)
        try:
            plan = space.suggest(trial, ranking, given=record.given_plan(trial), allocation=allocation)
            close_if_duplicate(record, trial, seed, plan, keys)
            record.write_plan(trial, plan)
            metrics = evaluator.evaluate(plan) if budget is None else budget.run_trial(plan, trial)
            close_if_duplicate(record, trial, seed, plan, keys)  # another worker's trial drew it while this one ran
            return record.write_trial(trial, metrics)
        except (PruningError, PluginError) as exc:
            record.write_failure(trial, exc)
            raise

    objective.current = None
    return objective


def plan_keys(
    record: StudyRecord, evaluator: Evaluator, ranking: GlobalRanking | None, allocation: Allocation | None
) -> PlanKeys:
    """The structure keys of the study's plans, parameters resolved as its trials resolve them."""
    space = evaluator.space.with_limits(record.rate_limits)

    def resolve(params: Mapping[str, Any]) -> Plan | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # FixedTrial warns of values off a distribution's grid
                return space.suggest(optuna.trial.FixedTrial(dict(params)), ranking, allocation=allocation)
        except (ValueError, AutopruneError, PruningError, PluginError):
            return None

    return PlanKeys(record, evaluator.structure.sizes, resolve)


def open_search(
    model: nn.Module,
    data: Any,
    settings: SearchSettings,
    *,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    artifacts: str | Path | None = None,
    study_attrs: dict[str, Any] | None = None,
    finetune: TrainSettings = FINETUNE,
) -> tuple[StudyRecord, Evaluator]:
    """The study's record (created, or checked and resumed) and the evaluator of its plans. A fine-tuned
    budget records its ``finetune`` recipe with a new study; a resumed one must have the same."""
    check_task(data, settings)
    check_importances(settings)
    record = StudyRecord(_open_study(settings, storage, study_name or default_study_name(model, data)))
    stored = (
        None
        if record.is_new or record.latency_table is None
        else LatencyTable.from_dict(record.latency_table, f"the latency table of study {record.name!r}")
    )
    evaluator = Evaluator.build(model, data, settings, latency_table=stored)
    source = baseline_source(evaluator.baseline, data)
    if record.is_new and record.resolution_warning is None:  # not said by the preflight already
        _tell_resolution(record, settings, evaluator.task.countable, len(data.val))
    device = str(next(evaluator.baseline.parameters()).device)
    if not record.is_new and record.run.get("trial_device", device) != device:
        _logger.warning(
            "study %r was created on %s and this process runs on %s: scores can differ in their last digits "
            "between devices (latency is timed on study.latency_device alone)",
            record.name,
            record.run["trial_device"],
            device,
        )
    if record.is_new:
        run = {**environment(), "splits": split_sizes(data), "trial_device": device}
        _create(record, evaluator, settings, source, _artifact_dir(storage, artifacts), study_attrs, run)
        if settings.budget == "finetuned":
            record.budget_recipe = finetune.to_attrs()
    else:
        record.check_resumable(settings, evaluator.groups, source)
        _check_budget_recipe(record, settings, finetune)
        record.update_budget(settings)
    if evaluator.latency_table is not None and stored is None:
        record.latency_table = dataclasses.asdict(evaluator.latency_table)
    return record, evaluator


def _check_budget_recipe(record: StudyRecord, settings: SearchSettings, finetune: TrainSettings) -> None:
    """A resumed fine-tuned budget fine-tunes its plans with the recipe its trials were scored with."""
    stored = record.budget_recipe
    if stored is not None:  # a recipe stored before a field existed holds that field's default
        stored = TrainSettings.from_attrs(stored).to_attrs()
    if settings.budget != "finetuned" or stored is None or stored == finetune.to_attrs():
        return
    now = finetune.to_attrs()
    changed = ", ".join(f"finetune.{k}={stored.get(k)!r} (not {now.get(k)!r})" for k in now if stored.get(k) != now[k])
    raise AutopruneError(
        f"study {record.name!r} scores its plans after fine-tuning with {changed}; "
        "use another study name (or output folder) for another recipe"
    )


def ensure_sensitivity(record: StudyRecord, evaluator: Evaluator) -> list[dict[str, Any]]:
    """The study's sensitivity curves, measured now unless the study holds them already."""
    if record.sensitivity is None:
        settings = evaluator.settings
        rows = measure_sensitivity(evaluator)
        record.write_sensitivity(
            rows,
            rate_limits(
                rows,
                evaluator.groups,
                settings.rate_min,
                settings.rate_max,
                settings.rate_step,
                recalibrated_allowance(settings),
            ),
        )
    return record.sensitivity


def prepare(
    record: StudyRecord,
    evaluator: Evaluator,
    ranking: GlobalRanking | None = None,
    budget: FinetunedBudget | None = None,
) -> None:
    """What a study learns before its trials, each part once: the sensitivity curves (and the
    groups' ranges they bound), the uniform and global baselines, and the warm-start trials.

    The first trials are the study's baselines, scored exactly as they were found, so the
    chosen trial is never worse than either: in a local scope the uniform and the global
    baselines, in a global scope the global one, in ``both`` both. Their rates, found by
    bisection between grid points, are recorded with the enqueued trial and are what it
    prunes; its parameters, which the sampler learns from, are the nearest grid point
    below. The warm starts follow: the sensitivity (or uniform) plans of a local scope.
    With a fine-tuned ``budget`` the baselines are bisected on fine-tuned accuracy, and the curves
    are read against :func:`~.finetuned.recalibrated_allowance`.
    """
    settings = evaluator.settings
    if settings.warm_start == "sensitivity" or settings.scope == "allocation":
        ensure_sensitivity(record, evaluator)
    if record.references is None:
        record.references = find_references(evaluator, ranking, None if budget is None else budget.evaluate)
    if record.warm_started:
        return
    space, plans, baselines = evaluator.space.with_limits(record.rate_limits), [], []
    if "channel" not in settings.granularities:  # weights only: uniform sparsities, or N:M everywhere
        if "weight" in settings.granularities:
            plans = [space.plan({}, sparsity=dict.fromkeys(space.groups, rate)) for rate in settings.uniform_starts]
        else:
            plans = [space.plan({}, nm_groups=space.groups)]
    else:
        baselines = _baseline_plans(record, space)
    if "channel" in settings.granularities and settings.scope != "global":
        if settings.warm_start == "sensitivity":
            measure = record.size_objective_measure
            plans += warm_start_plans(
                record.sensitivity, space, evaluator.base[measure], measure, recalibrated_allowance(settings)
            )
        elif settings.warm_start == "uniform":
            plans += [space.uniform(rate) for rate in settings.uniform_starts]
    with _quiet_optuna():  # a warm-start plan equal to another (rates clipped to the same range) is skipped quietly
        allocation = study_allocation(record, evaluator)
        if allocation is not None:
            _enqueue_allocations(record, allocation, baselines)
        else:
            for plan in baselines:
                record.enqueue(space.params(plan), exact=plan)
            for plan in plans:
                record.enqueue(space.params(plan))
    record.warm_started = True


def study_allocation(record: StudyRecord, evaluator: Evaluator) -> Allocation | None:
    """The :class:`~.allocation.Allocation` of a study of allocation scope (None in any other scope)."""
    settings = evaluator.settings
    if settings.scope != "allocation" or "channel" not in settings.granularities:
        return None
    measure = record.size_objective_measure
    return Allocation(
        evaluator.space.with_limits(record.rate_limits),
        record.sensitivity,
        evaluator.structure.sizes,
        evaluator.base[measure],
        measure,
        recalibrated_allowance(settings),
    )


def _enqueue_allocations(record: StudyRecord, allocation: Allocation, baselines: list[Plan]) -> None:
    """An allocation study's first trials: its baselines, exactly as found (their parameters: the level whose
    allocation saves as much by the curves, or the next one another baseline does not hold, every
    coefficient 0), then the curves as measured at each of the
    :data:`~.allocation.WARM_LEVELS`."""
    space, used = allocation.space, set()
    for plan in baselines:
        level = allocation.level_saving(plan)
        while level in used and level < ALLOCATION_LEVELS[1]:  # two baselines are two trials: the next level
            level += 1
        used.add(level)
        record.enqueue(space.allocation_params(level), exact=plan)
    for level in WARM_LEVELS:
        record.enqueue(space.allocation_params(level))


def _baseline_plans(record: StudyRecord, space: PlanSpace) -> list[Plan]:
    """The study's baselines as plans of its space, as they were scored: in a global or ``both`` scope
    the global one (its rate and the widest cap; the grid's lowest rate when none fit the budget),
    then the uniform one unless the scope is global, then in a local scope the global one's rates."""
    settings, plans = space.settings, []
    found = {kind: ref for kind, ref in record.references.items() if ref.get("rate") is not None and ref.get("plan")}
    if settings.scope in ("global", "both"):
        if "global" in found:
            rates = found["global"]["plan"]
            methods = dict.fromkeys(rates, found["global"]["importance"])
            cap = settings.rate_max
            plans.append(space.plan(rates, methods, global_rate=found["global"]["rate"], global_max_rate=cap))
        else:
            plans.append(space.global_start(settings.rate_min))
    kinds = {"local": ("uniform", "global"), "allocation": ("uniform", "global"), "both": ("uniform",), "global": ()}
    for kind in kinds[settings.scope]:
        if kind in found and found[kind]["rate"] > 0:
            rates = found[kind]["plan"]
            plans.append(space.plan(rates, dict.fromkeys(rates, found[kind]["importance"])))
    return plans


def preflight(
    model: nn.Module,
    data: Any,
    settings: SearchSettings,
    *,
    storage: str | optuna.storages.BaseStorage,
    study_name: str | None,
) -> None:
    """The checks of :func:`search` that need no trained weights, to run before training a baseline.

    Every importance must be registered; ``prune_only`` must match a group; a study that
    measures latency must have its latency table (or the device to measure one on); every
    bound must be within reach (:func:`~.feasibility.check_bounds`); and a study that
    exists already must have the same settings, groups, model and dataset. An accuracy
    budget finer than the validation split resolves is logged, and recorded with a new
    study (:func:`~.feasibility.resolution_warning`).
    """
    check_task(data, settings)
    task, sample = dataset_task(data), data.val[0][0].to(next(model.parameters()).device)
    example = task.example(sample)
    check_importances(settings, model, example, data)
    groups = searched_groups(prunable_groups(model.eval(), example), settings.prune_only)
    record = StudyRecord(_open_study(settings, storage, study_name or default_study_name(model, data)))
    if not record.is_new:
        record.check_resumable(settings, groups, baseline_source(model, data, with_weights=False))
    if "latency" in (*settings.objectives, *settings.bounds) and record.latency_table is None:
        check_latency_settings(settings, groups, task.repeated(sample, settings.latency_batch_size))
    check_bounds(settings, model, example, groups)
    _tell_resolution(record, settings, task.countable, len(data.val))


def _tell_resolution(record: StudyRecord, settings: SearchSettings, countable: bool, val_images: int) -> None:
    """Log the warning of a budget finer than the images trials are scored on resolve (the split's
    ``val_images`` images, or ``search.val_images`` of them when set), and record it with a new study."""
    scored = min(settings.val_images, val_images) if settings.val_images else val_images
    warning = resolution_warning(settings, countable, scored)
    if warning:
        _logger.warning(warning)
    if record.is_new and record.resolution_warning != warning:
        record.resolution_warning = warning


def check_task(data: Any, settings: SearchSettings) -> None:
    """The dataset's task is registered, and the settings it cannot serve are refused before any work.

    Importances that need gradients and recovery steps take the task's own loss
    (:meth:`~autoprune.Task.gradient_loss`); the corruption metrics assume class labels,
    so they serve a countable (top-1) task only.
    """
    task = dataset_task(data)
    if task.countable:
        return
    robust = [m for m in (*settings.objectives, *settings.bounds) if m.startswith("robust_")]
    if robust:
        raise AutopruneError(
            f"the dataset's task is {task.name!r}; the corruption metrics ({', '.join(map(repr, robust))}) "
            "serve classification only"
        )


def check_importances(
    settings: SearchSettings, model: nn.Module | None = None, example: Any = None, data: Any = None
) -> None:
    """An unknown importance, weight-importance or metric name fails here, before any work.

    Given a model (trained or not), each importance also scores every group once, so
    a plugin that raises or returns bad scores fails before a baseline is trained.
    """
    check_metrics(settings)
    methods = [resolve_importance(name) for name in settings.importances]
    if {"weight", "nm"} & set(settings.granularities):
        methods.append(resolve_weight_importance(settings.weight_importance))
    if model is None:
        return
    with torch.random.fork_rng(devices=[]):  # a plugin drawing random numbers changes nothing after
        calibration, batch_loss = None, None
        if any(method.needs_grads for method in methods):
            calibration = calibration_batches(data, 1, min(settings.batch_size, 16), settings.seed)
            batch_loss = dataset_task(data).gradient_loss
        for name in settings.importances:
            group_scores(model, example, name, calibration=calibration, batch_loss=batch_loss)
        if {"weight", "nm"} & set(settings.granularities):
            layers = sorted({layer for group in group_layers(model, example).values() for layer in group})
            weight_scores(model, layers, settings.weight_importance, calibration=calibration, batch_loss=batch_loss)


def check_metrics(settings: SearchSettings) -> None:
    """Every objective and constraint names a registered metric."""
    metrics = list_metrics()
    for name in settings.objectives:
        if name not in metrics:
            raise unknown_name("objective", name, metrics)
    for name in settings.bounds:
        if name not in metrics:
            raise unknown_name("metric in [constraints]", name, metrics)


def baseline_source(model: nn.Module, data: Any, *, with_weights: bool = True) -> dict[str, Any]:
    """What the study records of its baseline's origin (:mod:`autoprune.provenance`)."""
    from .. import __version__

    model_notes, data_notes = provenance(model), provenance(data)
    source: dict[str, Any] = {
        k: model_notes[k] for k in ("model", "model_params", "num_classes", "in_channels") if k in model_notes
    }
    source.update({k: data_notes[k] for k in ("dataset", "dataset_params") if k in data_notes})
    source["autoprune_version"] = __version__
    if with_weights:
        source["baseline_sha256"] = fingerprint(model)
        if model_notes.get("weights_sha256") == source["baseline_sha256"]:
            source["baseline_weights"] = model_notes["weights"]
    return source


def _settings(settings: SearchSettings | None, overrides: dict[str, Any]) -> SearchSettings:
    for key in overrides:
        if key in MOVED_TO_OPTIONS:
            metric, option = MOVED_TO_OPTIONS[key]
            raise AutopruneError(
                f"search() argument {key!r} is now an option of metric {metric!r}: "
                f"give metric_options={{{metric!r}: {{{option!r}: ...}}}}"
            )
    if settings is not None:
        return settings.replace(**overrides)
    names = SearchSettings.__dataclass_fields__
    for key in overrides:
        if key not in names:
            raise unknown_name("search() argument", key, names, list_all=True)
    if "max_accuracy_drop" not in overrides:
        raise AutopruneError("search() needs max_accuracy_drop= (or a SearchSettings)")
    return SearchSettings(**overrides)


def default_study_name(model: nn.Module, data: Any) -> str:
    """The name of a study given none: its model's and dataset's registered names (``small_cnn-digits``),
    else the model's class name; the same model and data in the same storage resume the same study."""
    model_name = provenance(model).get("model") or type(model).__name__
    dataset = provenance(data).get("dataset")
    return f"{model_name}-{dataset}" if dataset else str(model_name)


def _open_study(settings: SearchSettings, storage, study_name: str | None) -> optuna.Study:
    """Create or join the study. The process that records it samples from the study's seed, so a search
    is reproduced by its seed; one that joins a recorded study (a resume, another worker) from a seed of
    its own (:func:`joining_seed`), so it does not draw again the plans the study's seed drew."""
    with _quiet_optuna():
        directions = [metric_direction(o) for o in settings.objectives]
        pruner = (
            RungPruner(settings.max_accuracy_drop, len(settings.rungs))
            if settings.budget == "finetuned"
            else optuna.pruners.NopPruner()
        )
        study = optuna.create_study(
            study_name=study_name,
            storage=open_storage(storage, settings.heartbeat_interval),
            directions=directions,
            sampler=make_sampler(settings.sampler, settings.seed, STARTUP_TRIALS),
            pruner=pruner,
            load_if_exists=True,
        )
        if not StudyRecord(study).is_new:
            seed = joining_seed(settings.seed, len(study.get_trials(deepcopy=False)))
            study.sampler = make_sampler(settings.sampler, seed, STARTUP_TRIALS)
        return study


def joining_seed(seed: int, trials: int) -> int:
    """The sampler seed of a process joining a study of ``seed`` that holds ``trials`` trials: distinct for
    each resume (more trials) and each worker (its process id), the same seed's in neither."""
    digest = hashlib.sha256(f"{seed}:{trials}:{os.getpid()}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _create(
    record: StudyRecord,
    evaluator: Evaluator,
    settings: SearchSettings,
    source: dict[str, Any],
    artifact_dir: Path | None,
    study_attrs: dict[str, Any] | None,
    run: dict[str, Any],
) -> None:
    """Record a new study, keep its baseline's weights if no file holds them, enqueue its uniform starts."""
    if "baseline_weights" not in source and artifact_dir is not None:
        with tempfile.TemporaryDirectory(prefix="autoprune-") as tmp:
            state_file = Path(tmp) / "baseline.pt"
            atomic_save({"state_dict": copy.deepcopy(evaluator.baseline).cpu().state_dict()}, state_file)
            record.store_baseline_weights(state_file, artifact_dir)
    score = evaluator.task.metric  # what "accuracy" holds
    task = {"task": evaluator.task.name, "score": score, "score_label": getattr(evaluator.task, "metric_label", score)}
    record.create(settings, evaluator.groups, evaluator.base, source, task=task, extra=study_attrs, run=run)


def _artifact_dir(storage, artifacts: str | Path | None) -> Path | None:
    if artifacts is not None:
        return Path(artifacts)
    path = storage_file(storage)  # beside a SQLite database or a journal file
    return None if path is None else path.resolve().parent / "artifacts"


def _run_trials(record: StudyRecord, objective, settings: SearchSettings, progress: bool) -> None:
    """Run trials until the study holds ``settings.trials`` completed ones.

    Other workers may share the study: a trial running elsewhere counts towards the
    budget, so the workers stop together with exactly ``trials`` completed. A trial
    left running by a killed worker is failed once its heartbeat is stale, and its
    parameters run again (:mod:`autoprune.storage`); when only such trials are left,
    this worker waits for them to finish or go stale. Failed trials do not count;
    each is logged in one line, and ``max_failures`` of them in a row stop the
    search with an error.
    """
    full = optuna.study.MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE, TrialState.RUNNING))
    failures = _Failures(record, settings.max_failures)
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    grace = GRACE_FACTOR * settings.heartbeat_interval
    bar = SearchProgress(record, settings.trials) if progress else None
    try:
        _optimize_until_done(record, objective, settings, full, failures, deadline, grace, bar)
    finally:
        if bar is not None:
            bar.close()


def _optimize_until_done(
    record: StudyRecord,
    objective,
    settings: SearchSettings,
    full,
    failures,
    deadline,
    grace: float,
    bar: SearchProgress | None,
) -> None:
    study, waiting_since = record.study, None
    callbacks = [full, failures] if bar is None else [full, failures, bar]
    while True:
        fail_stale_trials(study)
        running = len(record.trials(states=(TrialState.RUNNING,)))
        missing = settings.trials - len(record.completed()) - running
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        if missing <= 0:
            if running and waiting_since is None:
                _log_waiting(record, grace)
            waiting_since = waiting_since or time.monotonic()
            if running == 0 or time.monotonic() - waiting_since > grace + settings.heartbeat_interval:
                return  # done, or the running trials have live workers that will finish them
            time.sleep(min(1.0, settings.heartbeat_interval / 2))
            continue
        waiting_since = None
        with _quiet_optuna(logging.ERROR), warnings.catch_warnings():  # failures are logged by _Failures
            warnings.filterwarnings("ignore", "Constraints have been set, but CmaEsSampler")  # documented
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            study.optimize(
                objective, n_trials=missing, timeout=left, catch=(PruningError, PluginError), callbacks=callbacks
            )
        if failures.in_a_row >= settings.max_failures:
            raise AutopruneError(
                f"{failures.in_a_row} trials in a row failed, so the search stopped "
                f"(search.max_failures); the last: {failures.last}"
            )


def _log_waiting(record: StudyRecord, grace: float) -> None:
    """Say why the search waits: the budget's last trials are running, here or in a worker that stopped."""
    numbers = ", ".join(f"#{t.number}" for t in record.trials(states=(TrialState.RUNNING,)))
    _logger.warning(
        "waiting for trial %s: running in another worker, or left by one that stopped "
        "(then failed and run again once its heartbeat is %.0f s old)",
        numbers,
        grace,
    )


def _skip_if_full(record: StudyRecord, trial: optuna.Trial, trials: int) -> None:
    """A trial started while the budget was already taken (two workers asked at once) stops here.

    Of trials running together, the lower numbers go on; this one is closed as
    PRUNED with the user attribute ``skipped``, so the study never exceeds ``trials``.
    """
    ahead = [t for t in record.trials(states=(TrialState.RUNNING,)) if t.number < trial.number]
    if len(record.completed()) + len(ahead) >= trials:
        record.write_skipped(trial, "the study had its trials when this one started")
        raise optuna.TrialPruned("the study had its trials")


class _Failures:
    """Logs each failed trial in one line and stops the study after ``limit`` in a row."""

    def __init__(self, record: StudyRecord, limit: int) -> None:
        self.record, self.limit, self.in_a_row, self.last = record, limit, 0, None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.in_a_row = 0 if trial.state == TrialState.COMPLETE else self.in_a_row
            return
        self.in_a_row += 1
        self.last = self.record.fail_reason(trial) or "no reason recorded"
        _logger.warning("trial %d failed: %s", trial.number, self.last)
        if self.in_a_row >= self.limit:
            study.stop()


@contextlib.contextmanager
def _quiet_optuna(level_within: int = logging.WARNING) -> Iterator[None]:
    """Optuna's per-trial log lines would drown the progress bar; keep warnings."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level_within)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
