"""The study record: the one place that knows what an autoprune study stores."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from autoprune import AutopruneError, SearchSettings
from autoprune.results import StudyRecord

SETTINGS = SearchSettings(max_accuracy_drop=1.0, importances=("l1", "fpgm"))
GROUPS = ["conv1", "layer1.0.conv1"]

#: A valid value other than SETTINGS' for every setting a resumed study may not change.
OTHER_VALUES = {
    "max_accuracy_drop": 2.0, "objective": "params", "seed": 1, "latency_batch_size": 8,
    "importances": ("l1",), "rate_min": 0.1, "rate_max": 0.6, "rate_step": 0.1,
    "calibration_batches": 5, "batch_size": 64, "uniform_starts": (0.2,),
}


def _record() -> StudyRecord:
    record = StudyRecord(optuna.create_study())
    record.create(SETTINGS, GROUPS, {"accuracy": 90.0, "flops": 1000, "params": 100},
                  {"model": "resnet20", "baseline_sha256": "00"})
    return record


def test_the_resume_check_compares_every_setting():
    fixed = {f.name for f in dataclasses.fields(SearchSettings) if not f.metadata["resumable"]}
    assert fixed == set(OTHER_VALUES), "a new setting needs a value in OTHER_VALUES"
    record = _record()
    record.check_resumable(SETTINGS, GROUPS)
    record.check_resumable(SETTINGS.replace(trials=500, timeout=60), GROUPS)
    for key, value in OTHER_VALUES.items():
        with pytest.raises(AutopruneError, match=f"created with {key}="):
            record.check_resumable(SETTINGS.replace(**{key: value}), GROUPS)
    with pytest.raises(AutopruneError, match="created with groups="):
        record.check_resumable(SETTINGS, GROUPS[:1])


def test_the_record_reads_back_what_it_wrote():
    record = _record()
    assert not record.is_new and record.settings == SETTINGS and record.groups == GROUPS
    assert record.baseline == {"accuracy": 90.0, "flops": 1000, "params": 100}
    assert record.source == {"model": "resnet20", "baseline_sha256": "00"}
    assert StudyRecord(optuna.create_study()).is_new


def test_user_attributes_cannot_take_the_records_keys():
    record = StudyRecord(optuna.create_study())
    with pytest.raises(AutopruneError, match="cannot set baseline_accuracy, seed"):
        record.create(SETTINGS, GROUPS, {"accuracy": 90.0}, {}, extra={"seed": 3, "baseline_accuracy": 1.0})


def test_trials_plans_and_feasibility():
    record = _record()
    for rates, drop in (((0.2, 0.2), 0.5), ((0.3, 0.6), 2.0), ((0.5, 0.1), 0.9)):
        trial = record.study.ask()
        for g, r in zip(GROUPS, rates):
            trial.suggest_float(f"{g}.rate", 0.0, 0.8, step=0.05)
            trial.suggest_categorical(f"{g}.method", ["l1", "fpgm"])
        flops = 1000 * (1 - sum(rates) / 2)
        value = record.write_trial(trial, {"accuracy": 90.0 - drop, "accuracy_drop": drop, "flops": flops,
                                           "params": 100.0, "prune_seconds": 0.1})
        record.study.tell(trial, value)
    done = record.completed()
    assert [record.is_feasible(t) for t in done] == [True, False, True]
    assert done[1].constraints == {"accuracy_drop": pytest.approx(1.0)}
    chosen = record.chosen_trial()
    assert chosen.number == min(record.feasible(), key=lambda t: t.value).number
    assert set(record.plan(chosen)["rates"]) == set(GROUPS)
    assert record.trial().number == chosen.number
    with pytest.raises(AutopruneError, match="trial 7 is not a completed trial"):
        record.trial(7)
