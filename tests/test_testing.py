"""autoprune.testing's fake study: what the study record writes for a search, with metrics a test makes up."""

from __future__ import annotations

import optuna

from autoprune import SearchSettings
from autoprune.results import StudyRecord
from autoprune.testing import FakeStudy

GROUPS = ["conv1", "conv2"]
BASELINE = {"accuracy": 90.0, "flops": 1000, "params": 100}


def _measure(plan):
    """Only conv1's rate costs accuracy (10 points a unit), only conv2's saves FLOPs."""
    drop = 10 * plan.rates["conv1"]
    return {"accuracy": 90.0 - drop, "accuracy_drop": drop, "flops": 1000 * (1 - plan.rates["conv2"])}


def test_a_fake_study_reads_back_as_the_study_of_a_search():
    settings = SearchSettings(max_accuracy_drop=1.0, importances=("l1", "fpgm"), rate_step=0.1)
    fake = FakeStudy(GROUPS, settings, baseline=BASELINE, source={"model": "small_cnn"})
    record = StudyRecord(fake.study)  # as a report or any other reader opens it
    assert not record.is_new and record.settings == settings and record.groups == GROUPS
    assert record.baseline == BASELINE and record.source == {"model": "small_cnn"}
    queued = fake.space.uniform(0.3, "fpgm")
    fake.queue(queued)
    trials = fake.run(_measure, trials=6)
    assert [t.number for t in trials] == list(range(6))
    assert record.plan(trials[0]) == queued  # the queued plan first, as a warm start
    assert len({tuple(sorted(t.params.items())) for t in trials}) > 1  # then the sampler's
    for trial in trials:
        plan = record.plan(trial)
        assert set(plan.rates) == set(GROUPS)
        assert all(any(abs(rate - r) < 1e-9 for r in record.space.grid) for rate in plan.rates.values())
        assert trial.value == _measure(plan)["flops"]
        assert record.is_feasible(trial) == (_measure(plan)["accuracy_drop"] <= 1.0)
    one = fake.trial({"accuracy": 89.5, "accuracy_drop": 0.5, "flops": 400.0}, fake.space.uniform(0.6))
    assert one.number == 6 and record.plan(one).rates == dict.fromkeys(GROUPS, 0.6)
    assert one.user_attrs["flops"] == 400.0 and record.chosen_trial().number == 6


def test_a_fake_study_with_several_objectives_takes_their_directions():
    settings = SearchSettings(max_accuracy_drop=1.0, objective=["accuracy", "flops"])
    fake = FakeStudy(GROUPS, settings, sampler=optuna.samplers.RandomSampler(seed=3))
    assert fake.study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    trial = fake.run(_measure)[0]
    assert trial.values == [trial.user_attrs["accuracy"], trial.user_attrs["flops"]]
