"""The keys an autoprune study stores, the record's version, and how older records are read.

An autoprune study is an ordinary Optuna study; these are the user attributes it
keeps, so the search, the report, the export and :class:`autoprune.Study` agree on
what a study holds, and any Optuna client can read it.

Study user attributes:

- ``record_version`` (:data:`RECORD_VERSION`): the layout below. A study without
  it was written by autoprune 0.1.0 or a development version after it (version 1); :func:`migrate` reads it
  as the current version, in memory (a study is never rewritten by reading it).
- the search settings, one attribute per :class:`~autoprune.SearchSettings` field;
- ``groups``: the prunable groups, in layer order (written last: a study
  interrupted while it is created is still new);
- ``baseline_accuracy``, ``baseline_flops``, ``baseline_params`` (and
  ``baseline_latency`` when latency is an objective); ``task``, and ``score``
  and ``score_label``: what ``accuracy`` holds in the task (a task's score is
  also kept under its own name: ``baseline_map``);
- where the baseline came from (:data:`SOURCE_KEYS`): ``model``,
  ``model_params``, ``num_classes``, ``in_channels``, ``dataset``,
  ``dataset_params``, ``baseline_weights`` (a weights file) or
  ``baseline_artifact`` with ``artifact_store`` (an Optuna artifact),
  ``baseline_sha256`` (a fingerprint of the weights), ``autoprune_version``;
- what the study ran on (:data:`RUN_KEYS`): ``machine``, ``versions``, ``splits``, ``trial_device`` (where
  its trials ran; ``device`` is the setting, which may say ``auto``);
- learned before the trials: ``sensitivity`` (per-group curves), ``rate_limits``
  (each group's searched range), ``references`` (the uniform and global baselines,
  found by bisection), ``warm_started``, ``latency_table_measured``,
  ``resolution_warning`` (the accuracy budget is worth fewer than three validation
  images, in words; absent when it is not); after them:
  ``finetuned_finalists`` (the best feasible plans fine-tuned) and
  ``latency_check`` (the latency table's predictions against timings).

Trial parameters: ``<group>.rate`` and ``<group>.method`` (and the global and
weight-sparsity parameters, :mod:`autoprune.plan.space`). Trial user attributes:
the metrics (:data:`METRICS`, a task's other scores, the study's own objectives and
constraints), timings (:data:`TIMINGS`), ``evaluated`` (validation images counted),
``plan`` (a global or enqueued trial's exact per-group plan), ``fail_reason`` or
``skipped``; with a fine-tuned budget, ``rungs``, ``recalibrated_accuracy``, ``finetune_epochs``, ``stopped``
and ``finetuned_weights`` (and the study's ``budget_recipe``). The constraint ``accuracy_drop`` holds ``accuracy_drop - max_accuracy_drop``.

The keys are not prefixed: autoprune creates and owns its studies, nothing else
writes their user attributes (Optuna's samplers prefix the system attributes they
share with each other), and these names are what users read in optuna-dashboard
and ``study.trials_dataframe()``. The version number makes a later change of
layout readable.
"""

from __future__ import annotations

from typing import Any

from ...errors import AutopruneError
from ...settings import MOVED_TO_OPTIONS

#: The layout this autoprune writes; :func:`migrate` reads every earlier one.
RECORD_VERSION = 2
VERSION = "record_version"

#: Trial metrics, in the order tables show them.
METRICS = ("accuracy", "accuracy_drop", "flops", "params", "latency", "sparsity", "nonzero_params", "size_bytes")
TIMINGS = ("prune_seconds", "recalibrate_seconds", "eval_seconds", "measure_seconds")
#: Validation images a trial's count saw (fewer than the split when it stopped early).
EVALUATED = "evaluated"
#: Why a failed trial failed (the error's message).
FAIL_REASON = "fail_reason"
#: Why a trial was closed unscored (PRUNED): the study had its trials when it started.
SKIPPED = "skipped"
#: Why a trial was closed unscored (PRUNED): its sampled parameters are those of the trial this names.
DUPLICATE_OF = "duplicate_of"
#: The user attribute of a queued trial that stands in for a closed duplicate: the duplicate's number.
REPLACES = "replaces"
#: The constraint every trial records: ``accuracy_drop - max_accuracy_drop`` (feasible when <= 0).
CONSTRAINT = "accuracy_drop"
#: The user attribute of a global-scope or enqueued trial that holds its exact per-group plan.
PLAN_ATTR = "plan"
#: What a trial of a fine-tuned budget records (:mod:`autoprune.searcher.finetuned`): each rung's
#: ``{fraction, epochs, accuracy, accuracy_drop, evaluated}`` (rung 0: recalibrated), its recalibrated
#: accuracy, the epochs of fine-tuning it took, ``{rung, reason}`` where it was stopped, and
#: ``{artifact_id, artifact_store}`` of its fine-tuned weights.
RUNGS, RECALIBRATED_ACCURACY, FINETUNE_EPOCHS = "rungs", "recalibrated_accuracy", "finetune_epochs"
STOPPED, FINETUNED_WEIGHTS = "stopped", "finetuned_weights"
#: The constraint a stopped trial records at least: it is not known to be within the budget.
STOPPED_VIOLATION = 1e-9
#: The study attribute of a fine-tuned budget's recipe (the ``[finetune]`` table), fixed when the study is created.
BUDGET_RECIPE = "budget_recipe"

GROUPS = "groups"
#: The study's task and what its ``accuracy`` holds: the task's score, under its own name and label.
TASK, SCORE, SCORE_LABEL = "task", "score", "score_label"
TASK_KEYS = (TASK, SCORE, SCORE_LABEL)
#: What a study learns before its trials, written once.
SENSITIVITY, RATE_LIMITS, REFERENCES, WARM_STARTED = "sensitivity", "rate_limits", "references", "warm_started"
#: Written after the trials: the best feasible plans fine-tuned.
FINALISTS = "finetuned_finalists"
#: The latency table a study predicts latency with, and the check of its predictions.
LATENCY_TABLE, LATENCY_CHECK = "latency_table_measured", "latency_check"
#: Why the accuracy budget is too fine for the validation split (a line for the report), written before the trials.
RESOLUTION_WARNING = "resolution_warning"
#: What the study ran on, written when it is created.
RUN_KEYS = ("machine", "versions", "splits", "trial_device")
#: What the study says about where its baseline came from.
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
#: Study attributes too long for a summary table.
BULKY = (GROUPS, SENSITIVITY, RATE_LIMITS, REFERENCES, FINALISTS, LATENCY_TABLE)


def owned_keys(setting_keys: list[str]) -> set[str]:
    """Every study attribute the record owns, given the settings' keys: a caller's own may use none."""
    learned = (
        SENSITIVITY,
        RATE_LIMITS,
        REFERENCES,
        WARM_STARTED,
        FINALISTS,
        LATENCY_TABLE,
        LATENCY_CHECK,
        RESOLUTION_WARNING,
        BUDGET_RECIPE,
    )
    baseline = (f"baseline_{m}" for m in METRICS)
    return {VERSION, GROUPS, *TASK_KEYS, *setting_keys, *SOURCE_KEYS, *RUN_KEYS, *baseline, *learned}


def _from_version_1(attrs: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (autoprune 0.1.0 and the development versions after it): settings added since were
    searched without, whatever today's default (``reconstruct``: no least-squares reconstruction); the
    settings that became a metric's options (``corruptions``, ...: :data:`~autoprune.settings.MOVED_TO_OPTIONS`)
    are read as those options."""
    tables: dict[str, dict[str, Any]] = {}
    for key, (metric, option) in MOVED_TO_OPTIONS.items():
        if key in attrs:
            tables.setdefault(metric, {})[option] = attrs[key]
    moved = {k: v for k, v in attrs.items() if k not in MOVED_TO_OPTIONS}
    return {"reconstruct": False, "metric_options": tables, **moved}


#: How each layout is read as the next one.
MIGRATIONS = {1: _from_version_1}


def migrate(attrs: dict[str, Any], study: str) -> dict[str, Any]:
    """A study's attributes as the current layout, whatever version wrote them (unchanged in storage)."""
    version = attrs.get(VERSION, 1)
    if not isinstance(version, int) or version > RECORD_VERSION:
        raise AutopruneError(
            f"study {study!r} was written by a newer autoprune (record version {version!r}; this one reads "
            f"versions 1 to {RECORD_VERSION}): upgrade autoprune to read it"
        )
    for step in range(version, RECORD_VERSION):
        attrs = MIGRATIONS[step](attrs)
    return {**attrs, VERSION: RECORD_VERSION}
