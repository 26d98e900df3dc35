"""What the trials of a fine-tuned budget did at each rung: where they stopped, the fine-tuning they took,
and how well each rung's score ranks plans by their fine-tuned score (Spearman's rank correlation, as
EagleEye (Li et al., ECCV 2020) measures a proxy score)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .record import StudyRecord
from .record.schema import FINETUNE_EPOCHS


def rung_summary(record: StudyRecord) -> dict[str, Any] | None:
    """None unless the study's budget is ``"finetuned"``; else ``{"fractions"`` (rung 0 first: 0.0)``,
    "recipe", "finished"`` (``{"trial", "accuracy": [per rung], "feasible"}`` of each trial that climbed every
    rung, best objective first)``, "stopped"`` (``{rung: trials stopped there}``)``, "dominated"`` (of those,
    stopped unscored by fine-tuning because a feasible trial was better)``, "trial_epochs",
    "reference_epochs"`` (fine-tuning spent, in epochs of the training split)``, "spearman"`` (``{rung:
    rank correlation with the fine-tuned score}``, None below 3 finished trials)``}``."""
    settings = record.settings
    if settings.budget != "finetuned":
        return None
    fractions = [0.0, *settings.rungs]
    finished, stopped, dominated, epochs = [], dict.fromkeys(range(len(fractions) - 1), 0), 0, 0.0
    for trial in record.completed():
        epochs += record.finetune_epochs(trial)
        where, scores = record.stopped(trial), record.rungs(trial)
        if where is not None:
            stopped[where["rung"]] = stopped.get(where["rung"], 0) + 1
            dominated += where["reason"].startswith("its ")
        elif len(scores) == len(fractions):
            row = {
                "trial": trial.number,
                "accuracy": [r["accuracy"] for r in scores],
                "feasible": record.is_feasible(trial),
            }
            finished.append((record.value(trial, record.size_objective, math.inf), row))
    rows = [row for _, row in sorted(finished, key=lambda item: (item[0], item[1]["trial"]))]
    references = record.references or {}
    return {
        "fractions": fractions,
        "recipe": record.budget_recipe or {},
        "finished": rows,
        "stopped": stopped,
        "dominated": dominated,
        "trial_epochs": epochs,
        "reference_epochs": sum(r.get(FINETUNE_EPOCHS, 0.0) for r in references.values()),
        "spearman": {k: _spearman(rows, k) for k in range(len(fractions) - 1)},
    }


def _spearman(rows: list[dict[str, Any]], rung: int) -> float | None:
    """Spearman's rank correlation of the finished trials' scores at ``rung`` and at the last rung."""
    if len(rows) < 3:
        return None
    frame = pd.DataFrame({"rung": [r["accuracy"][rung] for r in rows], "last": [r["accuracy"][-1] for r in rows]})
    rho = frame["rung"].rank().corr(frame["last"].rank())
    return None if pd.isna(rho) else float(rho)
