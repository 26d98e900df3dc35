"""A budget on the fine-tuned model: plans climb rungs of the fine-tuning recipe and stop once one rules them out.

With ``study.budget = "finetuned"`` a plan is feasible when its accuracy after the study's
``[finetune]`` recipe stays within ``max_accuracy_drop``. A trial is scored first after
BatchNorm recalibration (rung 0, what the recalibrated budget scores), then after each
fraction in ``search.rungs`` of one fine-tuning run (:func:`autoprune.training.train_rungs`:
the rungs share one run, so a plan that climbs them all costs one recipe). Each rung's
accuracy drop is reported to Optuna as the trial's intermediate value at that step, and the
study's trial pruner, :class:`RungPruner`, decides whether the plan goes on: the idea of
successive halving (Jamieson and Talwalkar, AISTATS 2016; Li et al., "Hyperband", JMLR
2018), that a short run rules out most candidates, with a rule fit for a constraint instead
of a ranking. A plan is stopped at rung ``k`` when even the largest share of a rung-``k``
drop that fine-tuning has recovered by the end, in the trials that finished the recipe
(with :data:`SLACK_FACTOR` to spare), would leave it over the budget.

A plan that cannot improve on the best fine-tuned feasible plan (a single-objective study
whose objective, FLOPs, parameters or latency, does not depend on the weights, and whose
value is no better than the incumbent's) is not fine-tuned at all.

A stopped plan is recorded as an infeasible trial with the score of the last rung it
reached and ``stopped`` saying where and why; it counts towards the study's trials like
any other. A plan that climbs every rung records its fine-tuned score, its recalibrated
one (``recalibrated_accuracy``) and every rung's (``rungs``); when it is feasible and the
best so far, its fine-tuned weights are kept with the study as an Optuna artifact of the
trial (``finetuned_weights``), which is what ``export`` writes.
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ..checkpoint import atomic_save
from ..metrics import metric_direction
from ..plan import Plan
from ..plan.elastic import ElasticRun
from ..results.record import StudyRecord
from ..results.record.schema import FINETUNE_EPOCHS, RECALIBRATED_ACCURACY
from ..settings import SearchSettings, TrainSettings
from ..training import train_rungs
from .evaluation import Budget, Evaluator

#: Finished trials (rescued from a drop over the budget) before their recovery alone sets a rung's limit.
MIN_FINISHED = 3
#: How many times less of a rung's drop than the least seen may remain after fine-tuning.
SLACK_FACTOR = 1.5
#: Before fine-tuning, a plan is taken to recover this many times the budget: the share of the
#: sensitivity curves the search's ranges and warm starts use.
RECOVERY_PRIOR = 4.0
#: Objectives that pruning alone decides (fine-tuning leaves them as they are).
STRUCTURAL = ("flops", "params", "latency")


def recalibrated_allowance(settings: SearchSettings) -> float:
    """The drop after recalibration alone that the sensitivity curves are read against: the budget, or with a
    fine-tuned budget :data:`RECOVERY_PRIOR` times it."""
    factor = RECOVERY_PRIOR if settings.budget == "finetuned" else 1.0
    return factor * settings.max_accuracy_drop


def rung_drops(trial: FrozenTrial) -> list[float]:
    """The drops a trial recorded at rung 0 (recalibrated) and each rung it reached."""
    return [row["accuracy_drop"] for row in StudyRecord.rungs(trial)]


class RungPruner(optuna.pruners.BasePruner):
    """Optuna's trial pruner of a fine-tuned budget: stops a plan at a rung when even the most that
    fine-tuning has recovered from that rung cannot bring it within the budget.

    Of a drop ``d`` at rung ``k``, the trials that finished the recipe recovered at most a share
    ``r`` by the end (among those whose drop there was over the budget: the ones fine-tuning had to
    rescue); a plan is stopped when ``d * (1 - r) / SLACK_FACTOR`` is still over the budget. Until
    :data:`MIN_FINISHED` such trials have finished, ``r`` is at least the prior share
    ``1 - 1 / RECOVERY_PRIOR``, which :func:`recalibrated_allowance` assumes too.
    """

    def __init__(self, max_drop: float, rungs: int) -> None:
        self.max_drop, self.rungs = max_drop, rungs

    def recovered_share(self, study: optuna.Study, step: int) -> float:
        """The largest share of a drop over the budget at ``step`` that fine-tuning has recovered by the end."""
        shares = [
            (drops[step] - drops[-1]) / drops[step]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(drops := rung_drops(t)) == self.rungs + 1 and drops[step] > self.max_drop
        ]
        prior = [] if len(shares) >= MIN_FINISHED else [1 - 1 / RECOVERY_PRIOR]
        return min(1.0, max(0.0, *shares, *prior))

    def limit(self, study: optuna.Study, step: int) -> float:
        """The largest drop at ``step`` a plan goes on from (the budget itself at the last rung)."""
        if step >= self.rungs:
            return self.max_drop
        kept = (1 - self.recovered_share(study, step)) / SLACK_FACTOR
        return math.inf if kept <= 0 else max(self.max_drop, self.max_drop / kept)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step >= self.rungs:
            return False
        return trial.intermediate_values[step] > self.limit(study, step)


@dataclass
class FinetunedBudget:
    """Scores plans after the study's fine-tuning recipe, rung by rung (:mod:`.finetuned`)."""

    evaluator: Evaluator
    data: Any
    recipe: TrainSettings
    record: StudyRecord | None = None
    artifact_dir: Path | None = None
    #: Fine-tuned weights of trials kept in memory when the study has no artifact folder.
    kept: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def settings(self) -> SearchSettings:
        return self.evaluator.settings

    def evaluate(self, plan: Plan) -> dict[str, float]:
        """``plan``'s metrics after the whole recipe, no rung stopping it (the baselines' bisection)."""
        model, metrics = self.evaluator.scored_model(plan, early_stop="off")
        recalibrated = metrics["accuracy"]
        tuned, rungs = self._fine_tuning(plan, model, (1.0,))
        for _ in rungs:
            pass
        metrics.update(self.evaluator.score(tuned()))
        metrics.update({RECALIBRATED_ACCURACY: recalibrated, FINETUNE_EPOCHS: float(self.recipe.epochs)})
        return metrics

    def _fine_tuning(self, plan: Plan, pruned: nn.Module, fractions: tuple[float, ...]):
        """``(final, rungs)``: the iterator of :func:`~autoprune.training.train_rungs` that fine-tunes ``plan``
        in the recipe's mode, and ``final(last=True)``, the model to score at a rung (the pruned model
        itself in mode hard; the baseline being fine-tuned, or at the last rung its cut, in soft and
        gradual: :class:`~autoprune.plan.elastic.ElasticRun`)."""
        seed, amp = self.settings.seed, self.settings.amp
        if self.recipe.mode == "hard":
            hook = plan.finetune_hook(pruned)
            rungs = train_rungs(pruned, self.data, self.recipe, fractions, seed=seed, amp=amp, after_step=hook)
            return (lambda last=True: pruned), rungs
        evaluator = self.evaluator
        run = ElasticRun(
            evaluator.baseline,
            evaluator.example,
            plan,
            self.recipe,
            evaluator.calibration,
            mode=self.recipe.mode,
            task=evaluator.task,
        )
        rungs = train_rungs(run.model, self.data, self.recipe, fractions, seed=seed, amp=amp, after_step=run.after_step)
        return (lambda last=True: run.finish() if last else run.model), rungs

    def run_trial(self, plan: Plan, trial: optuna.Trial) -> dict[str, float]:
        """Score ``plan`` as trial ``trial`` rung by rung, reporting each rung's drop; a plan the incumbent
        dominates or a rung rules out stops there (recorded in ``stopped``)."""
        evaluator, record = self.evaluator, self.record
        pruner, study = record.study.pruner, record.study
        loose = self._loose(pruner.limit(study, 0))
        model, metrics = evaluator.scored_model(plan, early_stop=None if loose else "off", budget=loose)
        rows = [{"fraction": 0.0, "epochs": 0.0, **_score_of(metrics)}]
        record.write_recalibrated(trial, metrics["accuracy"])
        trial.report(metrics["accuracy_drop"], 0)
        stopped = self._dominated(metrics) or ("rung 0 ruled it out" if trial.should_prune() else None)
        epochs = 0.0
        if stopped is None:
            fractions = self.settings.rungs
            tuned, rungs = self._fine_tuning(plan, model, fractions)
            for step, (fraction, epochs) in enumerate(zip(fractions, rungs), start=1):
                last = step == len(fractions)
                budget = evaluator.budget if last else self._loose(pruner.limit(study, step))
                model = tuned(last)
                scored = evaluator.score(model, early_stop=None if budget is not None else "off", budget=budget)
                metrics.update(scored)
                rows.append({"fraction": fraction, "epochs": epochs, **_score_of(scored)})
                trial.report(scored["accuracy_drop"], step)
                if not last and trial.should_prune():
                    stopped = f"rung {step} ruled it out"
                    break
            rungs.close()
            if stopped is None:
                metrics.update(evaluator.size(model, plan))  # a weight-dependent metric, of the fine-tuned model
        record.write_rungs(trial, rows, epochs, None if stopped is None else {"rung": len(rows) - 1, "reason": stopped})
        if stopped is None and metrics["accuracy_drop"] <= evaluator.budget.max_drop and self._improves(metrics):
            self._keep(trial, model)
        return metrics

    def _loose(self, limit: float) -> Budget | None:
        """The budget a rung's count may stop early under: the rung's limit (None: count every image)."""
        if not math.isfinite(limit):
            return None
        budget = self.evaluator.budget
        return Budget(budget.base_correct, budget.total, limit)

    def _objective(self) -> str | None:
        """The single objective that only pruning decides, or None."""
        objectives = self.settings.objectives
        return objectives[0] if len(objectives) == 1 and objectives[0] in STRUCTURAL else None

    def _incumbent(self) -> float | None:
        """The objective value of the best feasible fine-tuned trial so far, or None."""
        objective = self._objective()
        if objective is None:
            return None
        sign = 1.0 if metric_direction(objective) == "minimize" else -1.0
        values = [sign * self.record.value(t, objective) for t in self.record.feasible()]
        return min(values, default=None)

    def _dominated(self, metrics: dict[str, float]) -> str | None:
        best, objective = self._incumbent(), self._objective()
        if best is None or objective is None:
            return None
        sign = 1.0 if metric_direction(objective) == "minimize" else -1.0
        if sign * metrics[objective] >= best:
            return f"its {objective} is no better than a feasible fine-tuned trial's"
        return None

    def _improves(self, metrics: dict[str, float]) -> bool:
        best, objective = self._incumbent(), self._objective()
        if objective is None or best is None:
            return True  # multi-objective (every feasible point may be chosen), or the first feasible one
        sign = 1.0 if metric_direction(objective) == "minimize" else -1.0
        return sign * metrics[objective] <= best  # a tie may be chosen (the more accurate): keep it too

    def _keep(self, trial: optuna.Trial, model: nn.Module) -> None:
        """Keep the trial's fine-tuned weights: an Optuna artifact of the trial, else in memory."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.artifact_dir is None:
            self.kept[trial.number] = state
            return
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        store = Path(self.artifact_dir).resolve()
        store.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="autoprune-") as tmp:
            path = Path(tmp) / f"trial-{trial.number}-finetuned.pt"
            atomic_save({"state_dict": state}, path)
            artifact_id = upload_artifact(
                study_or_trial=trial, file_path=str(path), artifact_store=FileSystemArtifactStore(str(store))
            )
        self.record.write_finetuned_weights(trial, artifact_id, str(store))

    def weights(self, trial: FrozenTrial) -> dict[str, torch.Tensor] | None:
        """The fine-tuned state_dict kept for ``trial`` in this process, or None."""
        state = self.kept.get(trial.number)
        return None if state is None else copy.deepcopy(state)


def _score_of(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in ("accuracy", "accuracy_drop", "evaluated")}
