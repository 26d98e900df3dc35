"""A trial's pruned model, rebuilt from the study record alone (or from a baseline you give).

The record says which registered model and dataset the study searched, where the
baseline's weights are (a file or an Optuna artifact) and their fingerprint; the
trial's plan is applied exactly as the search did, with the same calibration
batches, so the rebuilt model is the trial's model.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial
from torch import nn

from ..batches import calibration_batches
from ..checkpoint import load_checkpoint
from ..errors import AutopruneError
from ..plan import Plan
from ..provenance import fingerprint
from ..zoo import create_dataset, create_model, dataset_task
from .record import StudyRecord

_logger = logging.getLogger("autoprune")


@dataclass
class Rebuilt:
    """The baseline, the pruned and recalibrated model of a trial (with its fine-tuned weights where a
    fine-tuned budget kept them: ``finetuned``), the data, the trial, its plan and the calibration batches
    it was pruned with."""

    baseline: nn.Module
    model: nn.Module
    data: Any
    trial: FrozenTrial
    plan: Plan
    finetuned: bool = False
    calibration: Any = None


def rebuild(
    record: StudyRecord, number: int | None = None, *, baseline: nn.Module | None = None, data: Any = None
) -> Rebuilt:
    """Rebuild trial ``number`` (default: the chosen trial) of a study: its plan applied to the baseline as
    the search applied it, and, for a trial of a fine-tuned budget, the fine-tuned weights it kept.

    ``baseline`` and ``data`` replace what the record names: a study searched on a
    model or data that did not come from autoprune's registries needs them.
    """
    trial = record.trial(number)
    data = rebuild_data(record) if data is None else data
    baseline = rebuild_baseline(record, data) if baseline is None else _on_cpu(baseline)
    _check_fingerprint(record, baseline)
    settings = record.settings
    calibration = calibration_batches(
        data, settings.calibration_batches, settings.batch_size, settings.seed, workers=settings.data_workers
    )
    plan = record.plan(trial)
    task = dataset_task(data)
    model = plan.apply(baseline, task.example(data.val[0][0]), calibration, task=task)
    state = record.finetuned_state(trial)
    if state is not None:
        model.load_state_dict(state)
    elif settings.budget == "finetuned" and record.is_feasible(trial):
        _logger.warning(
            "trial %d of study %r kept no fine-tuned weights (a fine-tuned budget keeps those of each trial that "
            "was the best so far): this is its recalibrated model; fine-tune it (--finetune-epochs) before use",
            trial.number,
            record.name,
        )
    return Rebuilt(baseline, model, data, trial, plan, finetuned=state is not None, calibration=calibration)


def rebuild_data(record: StudyRecord) -> Any:
    source = record.source
    if "dataset" not in source:
        raise AutopruneError(
            f"study {record.name!r} does not name a registered dataset (its data did not come from "
            "autoprune.create_dataset); rebuild it from Python with autoprune.Study.load(...).export(..., data=data)"
        )
    return create_dataset(source["dataset"], **source.get("dataset_params", {}))


def rebuild_baseline(record: StudyRecord, data: Any) -> nn.Module:
    source = record.source
    if "model" not in source:
        raise AutopruneError(
            f"study {record.name!r} does not name a registered model (its baseline did not come from "
            "autoprune.create_model); rebuild it from Python with autoprune.Study.load(...).export(..., baseline=model)"
        )
    model = create_model(
        source["model"],
        num_classes=source.get("num_classes", data.num_classes),
        in_channels=source.get("in_channels", data.input_shape[0]),
        **source.get("model_params", {}),
    )
    with tempfile.TemporaryDirectory(prefix="autoprune-") as tmp:
        weights = record.baseline_weights_file(Path(tmp))
        if weights is None:
            raise AutopruneError(
                f"study {record.name!r} kept no baseline weights (its model was trained in memory and "
                "the storage has no artifact folder); rebuild it from Python with autoprune.Study.load(...).export(..., baseline=model)"
            )
        if not weights.is_file():
            raise AutopruneError(
                f"the baseline weights {str(weights)!r} of study {record.name!r} are gone; "
                "rebuild it from Python with autoprune.Study.load(...).export(..., baseline=model)"
            )
        load_checkpoint(model, weights, what="the baseline weights")
    return model.eval()


def _on_cpu(model: nn.Module) -> nn.Module:
    """The given baseline in eval mode, copied to the CPU if it lives elsewhere (exports run there)."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()
    return model.eval()


def _check_fingerprint(record: StudyRecord, baseline: nn.Module) -> None:
    expected = record.source.get("baseline_sha256")
    if expected and fingerprint(baseline) != expected:
        raise AutopruneError(
            f"the baseline's weights are not the ones study {record.name!r} was searched with "
            "(their SHA-256 fingerprint differs): rebuilding would give another model"
        )
