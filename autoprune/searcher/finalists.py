"""Finalists: the best feasible plans fine-tuned after the search, to check the cheap score.

A trial's accuracy is measured after BatchNorm recalibration only, a proxy for
the accuracy the plan reaches once fine-tuned. With ``finalists = k`` the search
ends by fine-tuning its ``k`` best feasible plans (lowest objective first) with
the study's ``[finetune]`` recipe and recording their fine-tuned validation
accuracy; the report draws one against the other with Spearman's rank
correlation, the measure EagleEye (Li et al., ECCV 2020) uses for the same question.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..metrics import accuracy
from ..plan.elastic import finetune_plan
from ..precision import autocast
from ..results.record import StudyRecord
from ..settings import TrainSettings
from ..training import train
from .evaluation import Evaluator


def best_feasible(record: StudyRecord, count: int) -> list:
    """The ``count`` feasible trials with the lowest objective (the highest accuracy breaking ties)."""
    key = record.size_objective
    ranked = sorted(record.feasible(), key=lambda t: (record.value(t, key), -record.value(t, "accuracy"), t.number))
    return ranked[:count]


def fine_tune_finalists(record: StudyRecord, evaluator: Evaluator, data: Any, recipe: TrainSettings) -> None:
    """Fine-tune the study's finalists unless the record holds these very ones with this recipe."""
    finalists = best_feasible(record, evaluator.settings.finalists)
    numbers = [t.number for t in finalists]
    stored = record.finalists
    same_recipe = stored and TrainSettings.from_attrs(stored["recipe"]).to_attrs() == recipe.to_attrs()
    if not finalists or (same_recipe and [row["trial"] for row in stored["trials"]] == numbers):
        return
    rows, whole = [], evaluator.full_val_batches or evaluator.val_batches  # finalists: the whole split
    amp = evaluator.settings.amp
    for trial in finalists:
        plan = record.plan(trial)
        model = evaluator.apply(plan)
        with autocast(model, amp):
            before = record.value(trial, "accuracy") if whole is evaluator.val_batches else accuracy(model, whole)
        if recipe.mode == "hard":
            train(model, data, recipe, seed=evaluator.settings.seed, amp=amp, after_step=plan.finetune_hook(model))
        else:
            model = finetune_plan(
                evaluator.baseline,
                evaluator.example,
                plan,
                data,
                recipe,
                evaluator.calibration,
                mode=recipe.mode,
                seed=evaluator.settings.seed,
                task=evaluator.task,
                amp=amp,
            )
        with autocast(model, amp):
            after = accuracy(model, whole)
        rows.append({"trial": trial.number, "accuracy": before, "finetuned_accuracy": after})
    record.finalists = {"recipe": recipe.to_attrs(), "trials": rows, "spearman": rank_correlation(rows)}


def rank_correlation(rows: list[dict[str, Any]]) -> float | None:
    """Spearman's rank correlation of the recalibrated and the fine-tuned accuracy (None below 3 plans)."""
    if len(rows) < 3:
        return None
    frame = pd.DataFrame(rows)
    rho = frame["accuracy"].rank().corr(frame["finetuned_accuracy"].rank())
    return None if pd.isna(rho) else float(rho)
