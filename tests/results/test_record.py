"""The study record: the one place that knows what an autoprune study stores."""

from __future__ import annotations

import dataclasses
import re

import optuna
import pytest

from autoprune import AutopruneError, SearchSettings
from autoprune.results import StudyRecord
from autoprune.results.record import RECORD_VERSION
from autoprune.settings import options_class, setting_key

SETTINGS = SearchSettings(max_accuracy_drop=1.0, importances=("l1", "fpgm"), steps=(1, 2))  # recovery_steps may vary
GROUPS = ["conv1", "layer1.0.conv1"]

#: A valid value other than SETTINGS' for every setting a resumed study may not change.
OTHER_VALUES = {
    "max_accuracy_drop": 2.0,
    "objective": "params",
    "seed": 1,
    "latency_batch_size": 8,
    "budget": "finetuned",
    "rungs": (0.5, 1.0),
    "importances": ("l1",),
    "rate_min": 0.1,
    "rate_max": 0.6,
    "rate_step": 0.1,
    "calibration_batches": 5,
    "batch_size": 64,
    "val_images": 100,
    "uniform_starts": (0.2,),
    "early_stop": "off",
    "sampler": "random",
    "warm_start": "none",
    "scope": "global",
    "steps": (1, 2, 4),
    "recovery_steps": 3,
    "granularity": "weight",
    "nm": (1, 4),
    "sparsity_max": 0.5,
    "weight_importance": "snip",
    "round_to": 8,
    "reconstruct": False,
    "prune_only": ("features",),
    "constraints": {"latency": 5.0},
    "metric_options": {"robust_accuracy": {"corruption_images": 10}},
    "latency_device": "cuda",
    "latency_backend": "onnxruntime",
    "latency_threads": 4,
    "latency_table": "table.json",
    "amp": "bf16",
}


def _record() -> StudyRecord:
    record = StudyRecord(optuna.create_study())
    record.create(
        SETTINGS,
        GROUPS,
        {"accuracy": 90.0, "flops": 1000, "params": 100},
        {"model": "resnet20", "baseline_sha256": "00"},
    )
    return record


def test_the_resume_check_compares_every_setting():
    fixed = {f.name for f in dataclasses.fields(SearchSettings) if not f.metadata["resumable"]}
    assert fixed == set(OTHER_VALUES), "a new setting needs a value in OTHER_VALUES"
    record = _record()
    record.check_resumable(SETTINGS, GROUPS)
    record.check_resumable(SETTINGS.replace(trials=500, timeout=60), GROUPS)
    for key, value in OTHER_VALUES.items():
        # a metric's options are named one by one
        named = "metrics.robust_accuracy.corruption_images" if key == "metric_options" else setting_key(key)
        with pytest.raises(AutopruneError, match=f"created with {re.escape(named)}="):
            record.check_resumable(SETTINGS.replace(**{key: value}), GROUPS)
    with pytest.raises(AutopruneError, match="created with groups="):
        record.check_resumable(SETTINGS, GROUPS[:1])
    with pytest.raises(AutopruneError) as err:  # every difference is named at once
        record.check_resumable(SETTINGS.replace(seed=4, batch_size=32), GROUPS)
    assert "study.seed=0 (not 4), search.batch_size=128 (not 32)" in str(err.value)


def test_the_resume_check_compares_the_baseline():
    record = _record()
    record.check_resumable(SETTINGS, GROUPS, {"model": "resnet20", "baseline_sha256": "00"})
    with pytest.raises(AutopruneError, match="created with model='resnet20' \\(not 'resnet32'\\)"):
        record.check_resumable(SETTINGS, GROUPS, {"model": "resnet32", "baseline_sha256": "00"})
    with pytest.raises(AutopruneError, match="baseline with other weights"):
        record.check_resumable(SETTINGS, GROUPS, {"model": "resnet20", "baseline_sha256": "11"})


def test_a_resumed_study_records_its_new_budget():
    record = _record()
    record.update_budget(SETTINGS.replace(trials=200, timeout=60))
    assert record.settings == SETTINGS.replace(trials=200, timeout=60)


def test_a_study_is_new_until_its_creation_is_complete(monkeypatch):
    record = StudyRecord(optuna.create_study())
    written = []
    original = record.study.set_user_attr

    def crash_before_the_groups(key, value):
        if key == "groups":
            raise KeyboardInterrupt
        written.append(key)
        original(key, value)

    monkeypatch.setattr(record.study, "set_user_attr", crash_before_the_groups)
    with pytest.raises(KeyboardInterrupt):
        record.create(SETTINGS, GROUPS, {"accuracy": 90.0}, {"model": "resnet20"})
    assert "max_accuracy_drop" in written and "baseline_accuracy" in written and record.is_new


def test_values_a_study_cannot_store_are_refused_before_anything_is_written():
    record = StudyRecord(optuna.create_study())
    with pytest.raises(AutopruneError, match="cannot be stored in an Optuna study"):
        record.create(SETTINGS, GROUPS, {"accuracy": 90.0}, {"model_params": {"transform": object()}})
    assert record.study.user_attrs == {}


def test_a_study_not_made_by_autoprune_is_named_as_such():
    with pytest.raises(AutopruneError, match="is not an autoprune study"):
        _ = StudyRecord(optuna.create_study(study_name="plain")).settings


def test_the_record_reads_back_what_it_wrote():
    record = _record()
    assert not record.is_new and record.settings == SETTINGS and record.groups == GROUPS
    assert record.baseline == {"accuracy": 90.0, "flops": 1000, "params": 100}
    assert record.source == {"model": "resnet20", "baseline_sha256": "00"}
    assert StudyRecord(optuna.create_study()).is_new


def test_a_new_study_records_its_layout_version_and_an_unversioned_one_reads_as_version_1():
    record = _record()
    assert record.study.user_attrs["record_version"] == RECORD_VERSION
    old = StudyRecord(optuna.create_study())  # what 0.1.0 wrote: no version, no reconstruct setting
    for key, value in SETTINGS.replace(reconstruct=True).to_attrs().items():
        if key != "reconstruct":
            old.study.set_user_attr(key, value)
    old.study.set_user_attr("groups", GROUPS)
    assert old.settings.reconstruct is False
    assert "record_version" not in old.study.user_attrs  # read, never rewritten


def test_a_version_1_study_reads_its_corruption_settings_as_the_robustness_metrics_options():
    old = StudyRecord(optuna.create_study())
    stored = {k: v for k, v in SETTINGS.to_attrs().items() if k != "metric_options"}
    stored.update(corruptions=["contrast"], corruption_severities=[1, 2], corruption_images=300, groups=GROUPS)
    for key, value in stored.items():
        old.study.set_user_attr(key, value)
    options = old.settings.options_of("robust_accuracy")
    assert (options.corruptions, options.corruption_severities, options.corruption_images) == (
        ("contrast",),
        (1, 2),
        300,
    )
    for key, value in {
        "corruptions": list(options_class("robust_accuracy")().corruptions),
        "corruption_severities": [3],
        "corruption_images": 1000,
    }.items():
        old.study.set_user_attr(key, value)  # the defaults of then: the same search as a new study's defaults
    assert SETTINGS.replace(metric_options={}).resume_conflicts(old.settings) == []


def test_a_study_written_by_a_newer_autoprune_is_refused_in_one_line():
    record = _record()
    record.study.set_user_attr("record_version", RECORD_VERSION + 1)
    with pytest.raises(AutopruneError, match=f"newer autoprune \\(record version {RECORD_VERSION + 1}; this one reads"):
        _ = record.settings


def test_what_a_study_learns_is_read_back_after_it_is_assigned():
    storage = optuna.storages.InMemoryStorage()
    record = StudyRecord(optuna.create_study(storage=storage, study_name="learned"))
    record.create(SETTINGS, GROUPS, {"accuracy": 90.0}, {})
    assert record.references is None and record.finalists is None and not record.warm_started
    record.references = {"uniform": {"rate": 0.3, "flops": 500}}
    record.warm_started = True
    again = StudyRecord(optuna.load_study(study_name=record.name, storage=storage))
    assert again.references == {"uniform": {"rate": 0.3, "flops": 500}} and again.warm_started is True


def test_the_task_and_its_score_are_the_records_and_the_score_is_kept_under_its_own_name():
    record = StudyRecord(optuna.create_study())
    task = {"task": "detection", "score": "map", "score_label": "COCO mAP, points"}
    record.create(SETTINGS, GROUPS, {"accuracy": 41.0, "flops": 10, "params": 5}, {}, task=task)
    assert record.score_name == "map" and record.score_label == "COCO mAP, points"
    assert record.study.user_attrs["baseline_map"] == 41.0 and record.study.user_attrs["task"] == "detection"
    with pytest.raises(AutopruneError, match="cannot set score"):
        StudyRecord(optuna.create_study()).create(SETTINGS, GROUPS, {"accuracy": 1.0}, {}, extra={"score": "x"})
    with pytest.raises(ValueError, match="not a task key of the study record"):
        StudyRecord(optuna.create_study()).create(SETTINGS, GROUPS, {"accuracy": 1.0}, {}, task={"labels": 3})


def test_user_attributes_cannot_take_the_records_keys():
    record = StudyRecord(optuna.create_study())
    with pytest.raises(AutopruneError, match="cannot set baseline_accuracy, baseline_weights, seed"):
        record.create(
            SETTINGS,
            GROUPS,
            {"accuracy": 90.0},
            {},
            extra={"seed": 3, "baseline_accuracy": 1.0, "baseline_weights": "/x.pt"},
        )


def test_trials_plans_and_feasibility():
    record = _record()
    for rates, drop in (((0.2, 0.2), 0.5), ((0.3, 0.6), 2.0), ((0.5, 0.1), 0.9)):
        trial = record.study.ask()
        for g, _r in zip(GROUPS, rates):
            trial.suggest_float(f"{g}.rate", 0.0, 0.8, step=0.05)
            trial.suggest_categorical(f"{g}.method", ["l1", "fpgm"])
        flops = 1000 * (1 - sum(rates) / 2)
        value = record.write_trial(
            trial,
            {"accuracy": 90.0 - drop, "accuracy_drop": drop, "flops": flops, "params": 100.0, "prune_seconds": 0.1},
        )
        record.study.tell(trial, value)
    done = record.completed()
    assert [record.is_feasible(t) for t in done] == [True, False, True]
    assert done[1].constraints == {"accuracy_drop": pytest.approx(1.0)}
    chosen = record.chosen_trial()
    assert chosen.number == min(record.feasible(), key=lambda t: t.value).number
    assert set(record.plan(chosen).rates) == set(GROUPS)
    assert record.trial().number == chosen.number
    with pytest.raises(AutopruneError, match="trial 7 is not a completed trial"):
        record.trial(7)


def test_the_chosen_trial_is_the_more_accurate_of_equally_small_ones():
    record = _record()
    for accuracy in (89.5, 89.8, 89.6):  # three plans of the same size within the budget
        trial = record.study.ask()
        value = record.write_trial(
            trial, {"accuracy": accuracy, "accuracy_drop": 90.0 - accuracy, "flops": 500.0, "params": 50.0}
        )
        record.study.tell(trial, value)
    chosen = record.chosen_trial()
    assert chosen.user_attrs["accuracy"] == 89.8 and chosen in record.pareto_trials()
