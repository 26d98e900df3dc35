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

The search starts from uniform plans (the same rate in every group), enqueued as
the first trials: a uniform rate is what a user would try by hand, and the
sampler then moves each group away from it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ..checkpoint import atomic_save
from ..engine import prunable_groups, resolve_importance
from ..errors import AutopruneError, PruningError, unknown_name
from ..provenance import fingerprint, provenance
from ..results.record import Plan, StudyRecord
from ..settings import SearchSettings
from .evaluation import Evaluator, apply_plan
from .space import suggest_plan, uniform_params


@dataclass
class SearchResult:
    """The outcome of :func:`search`: the study, its record, and the chosen plan."""

    study: optuna.Study
    baseline: nn.Module
    example_inputs: torch.Tensor
    calibration: list = field(default_factory=list, repr=False)
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
        """``{"rates": {group: rate}, "methods": {group: importance}}`` of the best trial."""
        trial = self.best_trial
        return None if trial is None else self.record.plan(trial)

    @property
    def best_model(self) -> nn.Module | None:
        """The baseline pruned with :attr:`best_plan` and recalibrated, rebuilt on first use."""
        if self._best_model is None and self.best_trial is not None:
            self._best_model = apply_plan(self.baseline, self.example_inputs, self.best_plan, self.calibration)
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
    study_attrs: dict[str, Any] | None = None,
    **overrides: Any,
) -> SearchResult:
    """Search per-group rates and importances that minimize the objective within the accuracy budget.

    Args:
        model: the trained baseline (not modified).
        data: an object with ``.train``, ``.val``, ``.num_classes``, ``.input_shape``
            (what dataset factories return); ``.test`` is never read.
        settings: a :class:`~autoprune.SearchSettings`; its fields can also be given
            as keyword arguments (``max_accuracy_drop=1.0, trials=100``), which
            override the object's.
        storage: an Optuna storage URL (``sqlite:///study.db``, PostgreSQL...) or
            object; None keeps the study in memory.
        study_name: the study's name in the storage; the same name resumes it.
        artifacts: a folder for the study's files (Optuna's ``FileSystemArtifactStore``);
            default: ``artifacts/`` beside an SQLite database. The baseline's weights
            are kept there unless they came from a checkpoint file
            (:func:`autoprune.load_checkpoint`), whose path is recorded instead.
        progress: show Optuna's progress bar.
        study_attrs: user attributes of your own, recorded when the study is created.

    A resumed study (same storage and name) runs only the missing trials and must
    have the same settings, except ``trials`` and ``timeout``. Several workers
    sharing one storage stop together once the study holds ``trials`` completed trials.
    """
    settings = _settings(settings, overrides)
    check_importances(settings)
    evaluator = Evaluator.build(model, data, settings)
    source = baseline_source(evaluator.baseline, data)
    record = StudyRecord(_open_study(settings, storage, study_name))
    if record.is_new:
        _create(record, evaluator, settings, source, _artifact_dir(storage, artifacts), study_attrs)
    else:
        record.check_resumable(settings, evaluator.groups, source)
        record.update_budget(settings)

    def objective(trial: optuna.Trial) -> float | list[float]:
        try:
            return record.write_trial(trial, evaluator.evaluate(suggest_plan(trial, evaluator.groups, settings)))
        except PruningError as exc:
            record.write_failure(trial, exc)
            raise

    _run_trials(record, objective, settings, progress)
    return SearchResult(record.study, evaluator.baseline, evaluator.example, evaluator.calibration)


def preflight(model: nn.Module, data: Any, settings: SearchSettings, *,
              storage: str | optuna.storages.BaseStorage, study_name: str | None) -> None:
    """The checks of :func:`search` that need no trained weights, to run before training a baseline.

    Every importance must be registered, and a study that exists already must have
    the same settings, groups, model and dataset.
    """
    check_importances(settings)
    example = data.val[0][0].unsqueeze(0).to(next(model.parameters()).device)
    groups = prunable_groups(model.eval(), example)
    record = StudyRecord(_open_study(settings, storage, study_name))
    if not record.is_new:
        record.check_resumable(settings, groups, baseline_source(model, data, with_weights=False))


def check_importances(settings: SearchSettings) -> None:
    """An unknown importance name fails here, before any work."""
    for name in settings.importances:
        resolve_importance(name)


def baseline_source(model: nn.Module, data: Any, *, with_weights: bool = True) -> dict[str, Any]:
    """What the study records of its baseline's origin (:mod:`autoprune.provenance`)."""
    from .. import __version__

    model_notes, data_notes = provenance(model), provenance(data)
    source: dict[str, Any] = {k: model_notes[k] for k in ("model", "model_params", "num_classes", "in_channels")
                              if k in model_notes}
    source.update({k: data_notes[k] for k in ("dataset", "dataset_params") if k in data_notes})
    source["autoprune_version"] = __version__
    if with_weights:
        source["baseline_sha256"] = fingerprint(model)
        if model_notes.get("weights_sha256") == source["baseline_sha256"]:
            source["baseline_weights"] = model_notes["weights"]
    return source


def _settings(settings: SearchSettings | None, overrides: dict[str, Any]) -> SearchSettings:
    if settings is not None:
        return settings.replace(**overrides)
    names = SearchSettings.__dataclass_fields__
    for key in overrides:
        if key not in names:
            raise unknown_name("search() argument", key, names, list_all=True)
    if "max_accuracy_drop" not in overrides:
        raise AutopruneError("search() needs max_accuracy_drop= (or a SearchSettings)")
    return SearchSettings(**overrides)


def _open_study(settings: SearchSettings, storage, study_name: str | None) -> optuna.Study:
    with _quiet_optuna(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # TPE's `group`
        sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, group=True,
                                             n_startup_trials=max(10, len(settings.uniform_starts)))
        directions = ["maximize" if o == "accuracy" else "minimize" for o in settings.objectives]
        return optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                   sampler=sampler, load_if_exists=True)


def _create(record: StudyRecord, evaluator: Evaluator, settings: SearchSettings, source: dict[str, Any],
            artifact_dir: Path | None, study_attrs: dict[str, Any] | None) -> None:
    """Record a new study, keep its baseline's weights if no file holds them, enqueue its uniform starts."""
    if "baseline_weights" not in source and artifact_dir is not None:
        with tempfile.TemporaryDirectory(prefix="autoprune-") as tmp:
            state_file = Path(tmp) / "baseline.pt"
            atomic_save({"state_dict": copy.deepcopy(evaluator.baseline).cpu().state_dict()}, state_file)
            record.store_baseline_weights(state_file, artifact_dir)
    record.create(settings, evaluator.groups, evaluator.base, source, extra=study_attrs)
    for rate in settings.uniform_starts:
        record.study.enqueue_trial(uniform_params(rate, evaluator.groups, settings), skip_if_exists=True)


def _artifact_dir(storage, artifacts: str | Path | None) -> Path | None:
    if artifacts is not None:
        return Path(artifacts)
    if isinstance(storage, str) and storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        return Path(storage.removeprefix("sqlite:///")).resolve().parent / "artifacts"
    return None


def _run_trials(record: StudyRecord, objective, settings: SearchSettings, progress: bool) -> None:
    """Run trials until the study holds ``settings.trials`` completed ones.

    Failed trials do not count; the search gives up after as many failures as
    the trial budget. Other workers may share the study: each stops once it is full.
    """
    full = optuna.study.MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE,))
    failed_before = len(record.trials(states=(TrialState.FAIL,)))
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    while True:
        missing = settings.trials - len(record.completed())
        failures = len(record.trials(states=(TrialState.FAIL,))) - failed_before
        left = None if deadline is None else deadline - time.monotonic()
        if missing <= 0 or failures >= settings.trials or (left is not None and left <= 0):
            return
        with _quiet_optuna():
            record.study.optimize(objective, n_trials=missing, timeout=left, show_progress_bar=progress,
                                  catch=(PruningError,), callbacks=[full])


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial log lines would drown the progress bar; keep warnings."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
