"""The search's progress bar: trials done, how many are within the budget, the best reduction so far.

Optuna's own bar shows the objective's raw best value (``Best value: 1.716e+06``);
this one says what it means: ``37/100 trials, 12 feasible, best 2.77x fewer FLOPs
at -0.69 pt``. It reads each finished trial from the Optuna callback, so it costs
nothing per trial, and a resumed study starts the bar where it stopped.
"""

from __future__ import annotations

import sys

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..results.record import StudyRecord
from ..results.units import change, factor

__all__ = ["SearchProgress", "best_so_far", "progress_summary"]


def best_so_far(record: StudyRecord, feasible: list[FrozenTrial]) -> FrozenTrial | None:
    """Of ``feasible`` trials, the one that cut the study's size measure most (the smaller drop of equals)."""
    measure = record.size_objective
    scored = [t for t in feasible if record.value(t, measure, None)]
    return min(
        scored,
        key=lambda t: (record.value(t, measure), record.value(t, "accuracy_drop", 0.0), t.number),
        default=None,
    )


def progress_summary(record: StudyRecord, feasible: list[FrozenTrial]) -> str:
    """``12 feasible, best 2.77x fewer FLOPs at -0.69 pt`` (``0 feasible`` before any trial is)."""
    best = best_so_far(record, feasible)
    text = f"{len(feasible)} feasible"
    if best is None:
        return text
    measure = record.size_objective
    shown = {"flops": "FLOPs", "nonzero_params": "nonzero params", "size_bytes": "bytes"}.get(measure, measure)
    drop = record.value(best, "accuracy_drop")
    reduction = factor(record.baseline.get(measure), record.value(best, measure), measure)
    return f"{text}, best {reduction} {shown} at {change(drop, 'pt')}"


class SearchProgress:
    """A tqdm bar over the study's trials, updated by Optuna's trial callback; ``close()`` when done."""

    def __init__(self, record: StudyRecord, total: int) -> None:
        from tqdm.auto import tqdm

        self.record = record
        done = record.completed()
        self.feasible = [t for t in done if record.is_feasible(t)]
        self.bar = tqdm(
            total=total,
            initial=min(len(done), total),
            unit="trial",
            file=sys.stderr,
            dynamic_ncols=True,
            desc=record.name,
            bar_format="{desc}: {n_fmt}/{total_fmt} trials{postfix} |{bar}| [{elapsed}<{remaining}]",  # ", 12 feasible, ..."
        )
        self.bar.set_postfix_str(progress_summary(record, self.feasible), refresh=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            return
        if self.record.is_feasible(trial):
            self.feasible.append(trial)
        self.bar.set_postfix_str(progress_summary(self.record, self.feasible), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
