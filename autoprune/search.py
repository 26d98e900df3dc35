"""The search: per-group pruning rates and importances as Optuna hyperparameters.

Each prunable group ``g`` becomes ``g.rate`` (a discrete step between
``rate_min`` and ``rate_max``) and, when more than one importance is offered,
``g.method`` (categorical). A trial prunes a fresh copy of the baseline,
recalibrates its BatchNorm statistics on fixed training batches, evaluates it on
the validation split, and records ``accuracy``, ``accuracy_drop``, ``flops``,
``params`` and timings as trial user attributes. The accuracy-drop budget is the
constraint ``accuracy_drop - max_accuracy_drop <= 0`` set with
``trial.set_constraint``; the objective (FLOPs, parameters or latency; or two or
three of them with accuracy, as a multi-objective study) is optimized among
feasible trials by Optuna's TPE sampler (Bergstra et al., NeurIPS 2011; with
constraints as in Optuna's c-TPE support).

The search starts from uniform plans (the same rate in every group), enqueued as
the first trials: a uniform rate is what a user would try by hand, and the
sampler then moves each group away from it.

The study's user attributes hold the baseline's accuracy, FLOPs and parameters
and the settings, so any Optuna client can read a finished study.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader

from .errors import AutopruneError, PruningError
from .metrics import accuracy, latency_ms, measure
from .pruning import prunable_groups, prune, resolve_importance
from .recovery import recalibrate_batchnorm

#: What a single-objective search minimizes.
OBJECTIVES = ("flops", "params", "latency")
#: What a multi-objective search may trade off (two or three of them); accuracy is maximized.
MULTI_OBJECTIVES = ("accuracy", "flops", "params", "latency")
CONSTRAINT = "accuracy_drop"


@dataclass
class SearchResult:
    """The outcome of :func:`search`: the study and the best feasible plan."""

    study: optuna.Study
    baseline: nn.Module
    example_inputs: torch.Tensor
    calibration: list = field(default_factory=list, repr=False)
    _best_model: nn.Module | None = field(default=None, repr=False)

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        """The chosen feasible trial (see :func:`best_feasible_trial`), or None."""
        return best_feasible_trial(self.study)

    @property
    def best_plan(self) -> dict[str, dict[str, Any]] | None:
        """``{"rates": {group: rate}, "methods": {group: importance}}`` of the best trial."""
        trial = self.best_trial
        return None if trial is None else plan_from_trial(self.study, trial)

    @property
    def best_model(self) -> nn.Module | None:
        """The baseline pruned with :attr:`best_plan` and recalibrated, rebuilt on first use."""
        if self._best_model is None and self.best_trial is not None:
            self._best_model = apply_plan(self.baseline, self.example_inputs, self.best_plan, self.calibration)
        return self._best_model


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """A completed trial whose constraints all hold (Optuna's rule: every value <= 0)."""
    return trial.state == optuna.trial.TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


def best_feasible_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The feasible trial with the lowest objective; in a multi-objective study, the
    feasible Pareto point with the highest accuracy."""
    if len(study.directions) > 1:
        front = [t for t in study.best_trials if is_feasible(t)]
        return max(front, key=lambda t: (t.user_attrs["accuracy"], -t.number)) if front else None
    feasible = [t for t in study.get_trials(deepcopy=False) if is_feasible(t)]
    return min(feasible, key=lambda t: (t.value, t.number)) if feasible else None


def check_objectives(objective: str | Sequence[str]) -> list[str]:
    """The objectives as a list: one of OBJECTIVES, or two or three distinct MULTI_OBJECTIVES."""
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise AutopruneError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        return [objective]
    names = list(objective)
    unknown = [o for o in names if o not in MULTI_OBJECTIVES]
    if unknown or not 2 <= len(set(names)) == len(names) <= 3:
        raise AutopruneError(
            f"objectives must be two or three distinct names of {', '.join(MULTI_OBJECTIVES)}, got {names!r}"
        )
    return names


def plan_from_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, dict[str, Any]]:
    """The pruning plan a trial stands for, usable as ``prune(model, x, plan["rates"], plan["methods"])``."""
    groups = study.user_attrs["groups"]
    default = study.user_attrs["importances"][0]
    return {
        "rates": {g: float(trial.params.get(f"{g}.rate", 0.0)) for g in groups},
        "methods": {g: trial.params.get(f"{g}.method", default) for g in groups},
    }


#: Calibration batches whose gradients feed importances registered with ``needs_grads``.
GRADIENT_BATCHES = 4


def apply_plan(baseline: nn.Module, example_inputs, plan, calibration) -> nn.Module:
    """Prune a copy of ``baseline`` with ``plan`` and recalibrate its BatchNorm statistics."""
    model = prune(copy.deepcopy(baseline), example_inputs, plan["rates"], importance=plan["methods"],
                  calibration=calibration[:GRADIENT_BATCHES])
    return recalibrate_batchnorm(model, calibration)


def calibration_batches_of(data, count: int, batch_size: int, seed: int) -> list:
    """The fixed training batches every trial recalibrates BatchNorm on (the same for the same seed)."""
    loader = DataLoader(data.train, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    return [batch for _, batch in zip(range(count), loader)]


def rate_grid(rate_min: float, rate_max: float, step: float) -> list[float]:
    n = int(math.floor((rate_max - rate_min) / step + 1e-9))
    return [round(rate_min + k * step, 10) for k in range(n + 1)]


def search(
    model: nn.Module,
    data: Any,
    *,
    max_accuracy_drop: float,
    trials: int,
    importances: Sequence[str] = ("l1",),
    objective: str | Sequence[str] = "flops",
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    seed: int = 0,
    timeout: float | None = None,
    rate_min: float = 0.0,
    rate_max: float = 0.8,
    rate_step: float = 0.05,
    calibration_batches: int = 20,
    batch_size: int = 128,
    uniform_starts: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    latency_batch_size: int = 1,
    progress: bool = False,
    study_attrs: dict[str, Any] | None = None,
) -> SearchResult:
    """Search per-group rates and importances that minimize ``objective`` within the accuracy budget.

    Args:
        model: the trained baseline (not modified).
        data: an object with ``.train``, ``.val``, ``.num_classes``, ``.input_shape``
            (what dataset factories return); ``.test`` is never read.
        max_accuracy_drop: the largest allowed drop of top-1 validation accuracy,
            in percentage points.
        trials: the total number of completed trials of the study; a resumed
            study runs only the missing ones, and several workers sharing one
            storage stop together once the study holds this many.
        importances: registered importance names to choose from, per group.
        objective: ``"flops"``, ``"params"`` or ``"latency"``, minimized; or a list of
            two or three of ``"accuracy"``, ``"flops"``, ``"params"``, ``"latency"``
            for a multi-objective study (accuracy maximized, the others minimized),
            whose Pareto front holds only feasible trials.
        storage: an Optuna storage URL (``sqlite:///study.db``, PostgreSQL...) or
            object; None keeps the study in memory.
        study_name: the study's name in the storage; the same name resumes it.
        seed: seeds the sampler and the calibration batches.
        timeout: stop starting trials after this many seconds.
        rate_min, rate_max, rate_step: the grid of rates of every group.
        calibration_batches: training batches for BatchNorm recalibration.
        batch_size: batch size of calibration and evaluation.
        uniform_starts: uniform rates enqueued as the first trials of a new study.
        latency_batch_size: batch size of the latency measurement (median of
            repeated timed forward passes on this machine, ``torch.utils.benchmark``).
        progress: show Optuna's progress bar.
        study_attrs: extra study user attributes (recorded when the study is created).
    """
    objectives = check_objectives(objective)
    if isinstance(max_accuracy_drop, bool) or not isinstance(max_accuracy_drop, (int, float)):
        raise AutopruneError(f"max_accuracy_drop must be a number of percentage points, got {max_accuracy_drop!r}")
    if max_accuracy_drop < 0:
        raise AutopruneError(f"max_accuracy_drop cannot be negative but got {max_accuracy_drop!r}")
    for key, value in (("calibration_batches", calibration_batches), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AutopruneError(f"{key} must be a positive integer, got {value!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise AutopruneError(f"trials must be a positive integer, got {trials!r}")
    importances = list(dict.fromkeys(importances))
    if not importances:
        raise AutopruneError("importances must name at least one importance")
    for name in importances:
        resolve_importance(name)  # unknown names fail before any work
    if not 0 <= rate_min <= rate_max < 1:
        raise AutopruneError(f"rates need 0 <= rate_min <= rate_max < 1, got {rate_min} and {rate_max}")
    if not rate_step > 0:
        raise AutopruneError(f"rate_step must be positive, got {rate_step}")
    grid = rate_grid(rate_min, rate_max, rate_step)

    baseline = model.eval()
    device = next(baseline.parameters()).device
    example = data.val[0][0].unsqueeze(0).to(device)
    timing_input = example.expand(latency_batch_size, *example.shape[1:]).contiguous()
    groups = prunable_groups(baseline, example)
    if not groups:
        raise AutopruneError("the model has no prunable channel groups")
    calibration = calibration_batches_of(data, calibration_batches, batch_size, seed)
    val_batches = list(DataLoader(data.val, batch_size=batch_size))

    base_accuracy = accuracy(baseline, val_batches)
    base_size = measure(baseline, example)

    with _quiet_optuna(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # TPE's `group`
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                             n_startup_trials=max(10, len(uniform_starts)))
        directions = ["maximize" if o == "accuracy" else "minimize" for o in objectives]
        study = optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                    sampler=sampler, load_if_exists=True)
    settings = {
        "objective": objective if isinstance(objective, str) else objectives, "objectives": objectives,
        "max_accuracy_drop": float(max_accuracy_drop),
        "importances": importances, "groups": groups, "rate_min": rate_min, "rate_max": rate_max,
        "rate_step": rate_step, "calibration_batches": calibration_batches, "seed": seed,
        "batch_size": batch_size, "latency_batch_size": latency_batch_size,
    }
    if "groups" in study.user_attrs:
        _check_resumable(study, settings)
    else:
        for key, value in {**settings, **(study_attrs or {})}.items():
            study.set_user_attr(key, value)
        study.set_user_attr("baseline_accuracy", base_accuracy)
        study.set_user_attr("baseline_flops", base_size["flops"])
        study.set_user_attr("baseline_params", base_size["params"])
        if "latency" in objectives:
            study.set_user_attr("baseline_latency", latency_ms(baseline, timing_input))
        study.set_user_attr("trials", trials)
        for rate in uniform_starts:
            on_grid = min(grid, key=lambda r: abs(r - rate))
            params: dict[str, Any] = {f"{g}.rate": on_grid for g in groups}
            if len(importances) > 1:
                params.update({f"{g}.method": importances[0] for g in groups})
            study.enqueue_trial(params, skip_if_exists=True)

    def evaluate(trial: optuna.Trial) -> float | list[float]:
        rates = {g: trial.suggest_float(f"{g}.rate", rate_min, rate_max, step=rate_step) for g in groups}
        if len(importances) > 1:
            methods = {g: trial.suggest_categorical(f"{g}.method", importances) for g in groups}
        else:
            methods = {g: importances[0] for g in groups}
        start = time.perf_counter()
        pruned = apply_plan(baseline, example, {"rates": rates, "methods": methods}, calibration)
        pruned_at = time.perf_counter()
        acc = accuracy(pruned, val_batches)
        size = measure(pruned, example)
        drop = base_accuracy - acc
        trial.set_user_attr("accuracy", acc)
        trial.set_user_attr(CONSTRAINT, drop)
        trial.set_user_attr("flops", size["flops"])
        trial.set_user_attr("params", size["params"])
        if "latency" in objectives:
            size["latency"] = latency_ms(pruned, timing_input, min_run_time=0.2)
            trial.set_user_attr("latency", size["latency"])
        trial.set_user_attr("prune_seconds", pruned_at - start)
        trial.set_user_attr("eval_seconds", time.perf_counter() - pruned_at)
        trial.set_constraint(CONSTRAINT, drop - max_accuracy_drop)
        values = [acc if o == "accuracy" else float(size[o]) for o in objectives]
        return values[0] if len(values) == 1 else values

    # Only completed trials count: one interrupted by Ctrl-C or a crash is run again.
    remaining = trials - len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if remaining > 0:
        # Other workers may share the study: stop once it holds `trials` completed trials.
        enough = optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,))
        with _quiet_optuna():
            study.optimize(evaluate, n_trials=remaining, timeout=timeout, show_progress_bar=progress,
                           catch=(PruningError,), callbacks=[enough])
    return SearchResult(study, baseline, example, calibration)


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna's per-trial log lines would drown the progress bar; keep warnings."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _check_resumable(study: optuna.Study, settings: dict[str, Any]) -> None:
    for key in ("objective", "max_accuracy_drop", "groups", "importances", "rate_min", "rate_max", "rate_step",
                "calibration_batches", "seed"):
        if study.user_attrs.get(key) != settings[key]:
            raise AutopruneError(
                f"study {study.study_name!r} was created with {key}={study.user_attrs.get(key)!r}, "
                f"not {settings[key]!r}; use another study name (or output folder) for new settings"
            )
