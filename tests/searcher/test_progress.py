"""The search's progress bar says what a user watches for: trials, feasible ones, the best reduction."""

from __future__ import annotations

import copy

import optuna
import pytest

from autoprune import search
from autoprune.results import StudyRecord
from autoprune.searcher.progress import best_so_far, progress_summary


@pytest.fixture(scope="module")
def trained(train_digits_cnn):
    return train_digits_cnn(epochs=8)


def _study() -> optuna.Study:
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("groups", ["a", "b"])
    study.set_user_attr("max_accuracy_drop", 1.0)
    study.set_user_attr("baseline_accuracy", 95.0)
    study.set_user_attr("baseline_flops", 1_000_000)

    def objective(trial):
        a, b = (trial.suggest_float(f"{g}.rate", 0.0, 0.8, step=0.1) for g in "ab")
        drop, flops = 2 * a + 0.5 * b, 1_000_000 * (1 - (a + b) / 2)
        trial.set_user_attr("accuracy", 95.0 - drop)
        trial.set_user_attr("accuracy_drop", drop)
        trial.set_user_attr("flops", flops)
        trial.set_constraint("accuracy_drop", drop - 1.0)
        return flops

    study.optimize(objective, n_trials=25)
    return study


def test_the_summary_names_the_best_reduction_within_the_budget():
    record = StudyRecord(_study())
    feasible = record.feasible()
    best = min(feasible, key=lambda t: (t.user_attrs["flops"], t.user_attrs["accuracy_drop"]))
    assert best_so_far(record, feasible).number == best.number
    assert progress_summary(record, feasible) == (
        f"{len(feasible)} feasible, best {1_000_000 / best.user_attrs['flops']:.2f}x fewer FLOPs "
        f"at {-best.user_attrs['accuracy_drop']:+.2f} pt"
    )
    assert progress_summary(record, []) == "0 feasible"


def test_the_bar_counts_the_trials_and_shows_the_reduction_not_optunas_raw_value(trained, digits, capsys):
    result = search(
        copy.deepcopy(trained),
        digits,
        max_accuracy_drop=5.0,
        trials=4,
        calibration_batches=2,
        uniform_starts=(0.1,),
        progress=True,
    )
    err = capsys.readouterr().err
    assert "4/4 trials" in err and "Best value" not in err
    assert progress_summary(result.record, result.record.feasible()) in err
