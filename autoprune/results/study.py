"""A finished (or running) search as a Python object: tables, the chosen plan, export.

``autoprune.Study.load("runs/quickstart")`` gives what the command line gives:
``trials()`` and ``pareto()`` as pandas DataFrames, ``best_trial``,
``plan(trial)``, ``rebuild(trial)``, ``export(path, ...)`` and ``report()``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from torch import nn

from ..errors import AutopruneError
from ..plan import Plan
from ..plan.elastic import finetune_plan
from ..runtimes import Runtime
from ..settings import FINETUNE, FINETUNE_MODES
from ..storage import existing_storage, storage_file
from ..training import train
from ..zoo import dataset_task
from .export import check_inputs, measure_model, output_format, save
from .rebuild import Rebuilt, rebuild
from .record import StudyRecord, open_study

_logger = logging.getLogger(__name__)


class Study:
    """An autoprune study: the ``optuna.Study`` (``.optuna``) read through its record (``.record``)."""

    def __init__(self, study: optuna.Study, out_dir: str | Path | None = None, storage: str | None = None) -> None:
        self.optuna = study
        path = storage_file(storage) if storage is not None else None
        self.record = StudyRecord(study, home=path.parent if path else None)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.storage = storage  # its URL, when loaded from one

    @classmethod
    def load(cls, out_dir: str | Path | None = None, *, storage: str | None = None, name: str | None = None) -> Study:
        """Open the study of an output folder (its ``study.db``) or of any Optuna storage."""
        storage = existing_storage(out_dir, storage)
        return cls(open_study(storage, name).study, out_dir, storage)

    def trials(self) -> pd.DataFrame:
        """Every finished trial: metrics, feasibility, uniform rate, parameters."""
        from .report import trials_frame

        return trials_frame(self.record)

    def pareto(self) -> pd.DataFrame:
        """The Pareto front of feasible trials, as in the report's ``pareto.csv``."""
        from .report import front_frame

        return front_frame(self.record, self.trials())

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        return self.record.chosen_trial()

    def plan(self, trial: int | None = None) -> Plan:
        """The :class:`~autoprune.plan.Plan` of trial ``trial`` (default: the best feasible one)."""
        return self.record.plan(self.record.trial(trial))

    def rebuild(self, trial: int | None = None, *, baseline: nn.Module | None = None, data: Any = None) -> Rebuilt:
        """The baseline and the pruned, recalibrated model of a trial (with the fine-tuned weights a trial of
        a fine-tuned budget kept).

        A study searched on a model or data that did not come from autoprune's
        registries needs ``baseline=`` (the trained model) and ``data=``.
        """
        return rebuild(self.record, trial, baseline=baseline, data=data)

    def export(
        self,
        path: str | Path,
        trial: int | None = None,
        *,
        format: str = "torch",
        finetune_epochs: int = 0,
        distill: bool = False,
        lr: float = FINETUNE.lr,
        finetune_mode: str = "hard",
        baseline: nn.Module | None = None,
        data: Any = None,
    ) -> dict:
        """Rebuild trial ``trial``'s model (default: the best feasible trial; a trial of a fine-tuned budget
        with its fine-tuned weights), fine-tune it for ``finetune_epochs`` (with distillation from the baseline
        if ``distill``), save it to ``path`` as ``format`` and check the saved file against the model on
        validation inputs. ``finetune_mode``: ``"hard"`` fine-tunes the pruned model; ``"soft"`` and
        ``"gradual"`` fine-tune the baseline while the plan's channels are zeroed, and cut them at the end
        (:mod:`autoprune.plan.elastic`), to the same widths.

        Prints nothing (``autoprune export`` prints the returned measurements as its before/after table) and
        returns ``{"trial": number, "baseline": {...}, "pruned": {...}, "max_difference": float,
        "latency_batch_size": int}``: ``baseline`` and ``pruned`` each map ``val_<score>`` and
        ``test_<score>`` (``val_accuracy``; ``val_map`` and ``val_map_50``; ``val_miou``), ``flops``,
        ``params`` and ``latency_ms`` (measured at ``latency_batch_size`` in ``latency_runtime``, the study's
        runtime where this machine has it) to numbers;
        ``max_difference`` is the largest difference between the saved file's outputs and the model's;
        ``finetuned`` is True when the trial's own fine-tuned weights (a fine-tuned budget's) were exported.
        """
        output_format(path, format)  # a folder, or a suffix of another format, before any work
        _check_finetune_mode(finetune_mode, finetune_epochs)
        rebuilt = self.rebuild(trial, baseline=baseline, data=data)
        settings = self.record.settings
        if finetune_epochs:
            teacher = copy.deepcopy(rebuilt.baseline) if distill else None
            recipe = FINETUNE.replace(epochs=finetune_epochs, lr=lr)
            if finetune_mode == "hard":
                hook = rebuilt.plan.finetune_hook(rebuilt.model)
                train(rebuilt.model, rebuilt.data, recipe, seed=settings.seed, teacher=teacher, after_step=hook)
            else:
                if rebuilt.finetuned:
                    raise AutopruneError(
                        f"finetune mode {finetune_mode!r} fine-tunes the baseline while pruning it, but trial "
                        f"{rebuilt.trial.number} kept the fine-tuned weights of its pruned model (a fine-tuned "
                        "budget's): export them as they are, or fine-tune them further in mode 'hard'"
                    )
                task = dataset_task(rebuilt.data)
                rebuilt.model = finetune_plan(
                    rebuilt.baseline,
                    task.example(rebuilt.data.val[0][0]),
                    rebuilt.plan,
                    rebuilt.data,
                    recipe,
                    rebuilt.calibration,
                    mode=finetune_mode,
                    seed=settings.seed,
                    task=task,
                    teacher=teacher,
                )
        runtime = self.latency_runtime()
        measured = {
            name: measure_model(model, rebuilt.data, latency_batch_size=settings.latency_batch_size, runtime=runtime)
            for name, model in (("baseline", rebuilt.baseline), ("pruned", rebuilt.model))
        }
        task = dataset_task(rebuilt.data)
        difference = save(
            rebuilt.model,
            path,
            format,
            task.example(rebuilt.data.val[0][0]),
            check_inputs(task, rebuilt.data, 8),
            metadata={
                "study": self.record.name,
                "trial": rebuilt.trial.number,
                **rebuilt.plan.to_dict(),
                "metrics": measured["pruned"],
            },
            unpruned=rebuilt.baseline,
            torchscript=task.torchscript,
        )
        return {
            "trial": rebuilt.trial.number,
            **measured,
            "max_difference": difference,
            "latency_batch_size": settings.latency_batch_size,
            "latency_runtime": runtime.describe(),
            "finetuned": rebuilt.finetuned,
        }

    def latency_runtime(self) -> Runtime:
        """The runtime the study times latency in (``latency_backend`` on ``latency_device``), or, with a
        warning, PyTorch on the CPU where this machine lacks it (a table measured on the target)."""
        runtime = Runtime.of(self.record.settings)
        try:
            runtime.check()
        except AutopruneError as missing:
            _logger.warning("latency is timed in PyTorch on the CPU instead: %s", missing)
            return Runtime()
        return runtime

    def report(self, folder: str | Path | None = None) -> Path:
        """Write the report (default: ``<out_dir>/report``) and return its ``index.html``."""
        from .report import write_report

        if folder is None:
            if self.out_dir is None:
                raise AutopruneError("give a folder for the report")
            folder = self.out_dir / "report"
        return write_report(self.record, folder, out_dir=self.out_dir, storage=self.storage)


def _check_finetune_mode(mode: str, epochs: int) -> None:
    if mode not in FINETUNE_MODES:
        raise AutopruneError(f"finetune mode must be one of {', '.join(map(repr, FINETUNE_MODES))}, got {mode!r}")
    if mode != "hard" and not epochs:
        raise AutopruneError(
            f"finetune mode {mode!r} prunes while fine-tuning; give finetune epochs too (>= 1), or mode 'hard'"
        )
