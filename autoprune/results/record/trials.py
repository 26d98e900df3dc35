"""What a trial of an autoprune study records: its metrics and constraints, its exact plan, why it failed
or was skipped; and how each is read back."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from ...metrics import metric_direction
from ...plan import ALLOCATION_LEVEL, GLOBAL_RATE, Plan
from .schema import (
    CONSTRAINT,
    DUPLICATE_OF,
    EVALUATED,
    FAIL_REASON,
    FINETUNE_EPOCHS,
    FINETUNED_WEIGHTS,
    PLAN_ATTR,
    RECALIBRATED_ACCURACY,
    REPLACES,
    RUNGS,
    SKIPPED,
    STOPPED,
    STOPPED_VIOLATION,
    TIMINGS,
)

if TYPE_CHECKING:
    from .study_record import StudyRecord


def write_trial(record: StudyRecord, trial: optuna.Trial, metrics: dict[str, float]) -> list[float] | float:
    """Record a trial's metrics and constraints; return its objective value(s).

    Each ``[constraints]`` bound is recorded under the metric's name, as ``value -
    bound`` for a metric to minimize and ``bound - value`` for one to maximize, so
    it is met when <= 0, as the accuracy budget is. A trial a fine-tuned budget stopped at a rung
    is infeasible whatever its last rung scored.
    """
    named = (*record.metric_names, *TIMINGS, EVALUATED)
    for key in named:
        if key in metrics:
            trial.set_user_attr(key, metrics[key])
    for key, value in metrics.items():  # a task's other scores (map_50), and its score under its own name
        if key not in named and isinstance(value, (int, float)):
            trial.set_user_attr(key, value)
    if record.score_name != "accuracy":
        trial.set_user_attr(record.score_name, metrics["accuracy"])
        trial.set_user_attr(f"{record.score_name}_drop", metrics["accuracy_drop"])
    violation = metrics["accuracy_drop"] - record.max_accuracy_drop
    if STOPPED in trial.user_attrs:  # a fine-tuned budget stopped it at a rung: never feasible
        violation = max(violation, STOPPED_VIOLATION)
    trial.set_constraint(CONSTRAINT, violation)
    bounds = record.settings.bounds if len(record.constraint_names) > 1 else {}
    for name, bound in bounds.items():
        over = metrics[name] - bound
        trial.set_constraint(name, -over if metric_direction(name) == "maximize" else over)
    values = [float(metrics[o]) for o in record.objectives]
    return values[0] if len(values) == 1 else values


def value(trial: FrozenTrial, name: str, default: Any = math.nan) -> Any:
    """What trial ``trial`` recorded as ``name`` (a metric, a timing, ``evaluated``), or ``default``."""
    return trial.user_attrs.get(name, default)


def write_skipped(trial: optuna.Trial, reason: str) -> None:
    """Record why a trial was closed without being scored (it started after the study had its trials)."""
    trial.set_user_attr(SKIPPED, reason)


def write_duplicate(trial: optuna.Trial, of: int) -> None:
    """Record that a trial was closed unscored because trial ``of`` holds its parameters."""
    trial.set_user_attr(DUPLICATE_OF, of)


def duplicate_of(trial: FrozenTrial) -> int | None:
    """The trial whose parameters a closed duplicate drew again, or None."""
    return trial.user_attrs.get(DUPLICATE_OF)


def stands_in_for(trial: optuna.Trial | FrozenTrial) -> int | None:
    """The closed duplicate that queued trial ``trial`` stands in for, or None."""
    return trial.user_attrs.get(REPLACES)


def retries(trial: FrozenTrial) -> int | None:
    """The number of the trial a killed worker left running that ``trial`` runs again (Optuna's retry of a
    stale trial), or None."""
    with warnings.catch_warnings():  # experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def write_failure(trial: optuna.Trial, error: Exception) -> None:
    """Record why a trial failed."""
    trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {error}")


def fail_reason(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(FAIL_REASON)


def scope(trial: FrozenTrial) -> str:
    """ "global" for a trial of global scope, else "local"."""
    return "global" if GLOBAL_RATE in trial.params else "local"


def exact_plan(plan: Plan) -> dict[str, Any]:
    """What a trial keeps of a plan its parameters do not say exactly: its per-group rates and methods."""
    return {"rates": dict(plan.rates), "methods": dict(plan.methods)}


def write_plan(trial: optuna.Trial, plan: Plan) -> None:
    """Record what a trial's parameters do not say: a global or allocation plan's per-group rates and
    methods (an enqueued baseline's were recorded when it was enqueued)."""
    resolved = plan.scope == "global" or ALLOCATION_LEVEL in trial.params
    if resolved and PLAN_ATTR not in trial.user_attrs:
        trial.set_user_attr(PLAN_ATTR, exact_plan(plan))


def given_plan(trial: optuna.Trial | FrozenTrial) -> dict[str, Any] | None:
    """The exact ``{"rates", "methods"}`` a trial recorded (a global trial's, an enqueued baseline's), or None."""
    return trial.user_attrs.get(PLAN_ATTR)


def write_recalibrated(trial: optuna.Trial, accuracy: float) -> None:
    """Record a fine-tuned budget's trial's score after recalibration alone (rung 0)."""
    trial.set_user_attr(RECALIBRATED_ACCURACY, accuracy)


def write_rungs(trial: optuna.Trial, rows: list[dict[str, float]], epochs: float, stopped: dict | None) -> None:
    """Record a fine-tuned budget's trial's score at each rung it reached, the epochs it was fine-tuned and,
    when a rung stopped it, ``{"rung", "reason"}`` (which makes it infeasible: :func:`write_trial`)."""
    trial.set_user_attr(RUNGS, rows)
    trial.set_user_attr(FINETUNE_EPOCHS, epochs)
    if stopped is not None:
        trial.set_user_attr(STOPPED, stopped)


def write_finetuned_weights(trial: optuna.Trial, artifact_id: str, store: str) -> None:
    """Record the Optuna artifact holding a trial's fine-tuned weights."""
    trial.set_user_attr(FINETUNED_WEIGHTS, {"artifact_id": artifact_id, "artifact_store": store})


def rungs(trial: FrozenTrial) -> list[dict[str, float]]:
    """A fine-tuned budget's trial's score at each rung it reached (rung 0: recalibrated); empty otherwise."""
    return trial.user_attrs.get(RUNGS, [])


def stopped(trial: FrozenTrial) -> dict[str, Any] | None:
    """``{"rung", "reason"}`` of a trial a fine-tuned budget stopped at a rung, or None."""
    return trial.user_attrs.get(STOPPED)


def finetune_epochs(trial: FrozenTrial) -> float:
    """Epochs of the training split a trial was fine-tuned (0 in a recalibrated budget)."""
    return trial.user_attrs.get(FINETUNE_EPOCHS, 0.0)


def has_finetuned_weights(trial: FrozenTrial) -> bool:
    return FINETUNED_WEIGHTS in trial.user_attrs
