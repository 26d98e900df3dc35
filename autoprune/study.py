"""A finished (or running) search as a Python object: tables, the chosen plan, export.

``autoprune.Study.load("runs/quickstart")`` gives what the command line gives:
``trials()`` and ``pareto()`` as pandas DataFrames, ``best_trial``,
``plan(trial)``, ``rebuild(trial)``, ``export(path, ...)`` and ``report()``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pandas as pd

from . import export as _export
from .errors import AutopruneError, unknown_name
from .search import best_feasible_trial, plan_from_trial


class Study:
    """Wraps the ``optuna.Study`` of an autoprune search (``.optuna``)."""

    def __init__(self, study: optuna.Study, out_dir: str | Path | None = None) -> None:
        self.optuna = study
        self.out_dir = Path(out_dir) if out_dir is not None else None

    @classmethod
    def load(cls, out_dir: str | Path | None = None, *, storage: str | None = None,
             name: str | None = None) -> Study:
        """Open the study of an output folder (its ``study.db``) or of any Optuna storage."""
        if storage is None:
            if out_dir is None:
                raise AutopruneError("give the search's output folder or a storage URL")
            db = Path(out_dir) / "study.db"
            if not db.is_file():
                raise AutopruneError(f"{db} does not exist; pass --storage URL for a study stored elsewhere")
            storage = f"sqlite:///{db.resolve()}"
        names = optuna.get_all_study_names(storage)
        if name is None:
            if len(names) != 1:
                raise AutopruneError(f"the storage holds studies {names}; choose one with --study NAME")
            name = names[0]
        elif name not in names:
            raise unknown_name("study", name, names)
        return cls(optuna.load_study(study_name=name, storage=storage), out_dir)

    def trials(self) -> pd.DataFrame:
        """Every finished trial: metrics, feasibility, uniform rate, parameters."""
        from .report import trials_frame

        return trials_frame(self.optuna)

    def pareto(self) -> pd.DataFrame:
        """The Pareto front of feasible trials, as in the report's ``pareto.csv``."""
        from .report import front_of

        return front_of(self.optuna, self.trials())

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        return best_feasible_trial(self.optuna)

    def plan(self, trial: int | None = None) -> dict:
        """``{"rates": ..., "methods": ...}`` of trial ``trial`` (default: the best feasible one)."""
        return plan_from_trial(self.optuna, _export.choose_trial(self.optuna, trial))

    def rebuild(self, trial: int | None = None) -> _export.Rebuilt:
        """The baseline and the pruned, recalibrated model of a trial."""
        return _export.rebuild(self.optuna, trial)

    def export(self, path: str | Path, trial: int | None = None, *, format: str = "torch",
               finetune_epochs: int = 0, distill: bool = False, lr: float = 0.01) -> dict:
        """Rebuild, optionally fine-tune, and save a trial's model; return its measurements."""
        rebuilt = self.rebuild(trial)
        data = rebuilt.data
        example = data.val[0][0].unsqueeze(0)
        if finetune_epochs:
            teacher = copy.deepcopy(rebuilt.baseline) if distill else None
            _export.finetune(rebuilt.model, data, finetune_epochs, teacher=teacher, lr=lr,
                             seed=self.optuna.user_attrs.get("seed", 0))
        result = {"trial": rebuilt.trial.number, "baseline": _export.evaluate(rebuilt.baseline, data, example),
                  "pruned": _export.evaluate(rebuilt.model, data, example)}
        check = _export.real_batch(data, 8)
        result["max_difference"] = _export.save(
            rebuilt.model, path, format, example, check,
            metadata={"study": self.optuna.study_name, "trial": rebuilt.trial.number, **rebuilt.plan,
                      "metrics": result["pruned"]},
        )
        return result

    def report(self, folder: str | Path | None = None) -> Path:
        """Write the report (default: ``<out_dir>/report``) and return its ``index.html``."""
        from .report import write_report

        if folder is None:
            if self.out_dir is None:
                raise AutopruneError("give a folder for the report")
            folder = self.out_dir / "report"
        return write_report(self.optuna, folder)
