"""The search's progress bar says what a user watches for: trials, feasible ones, the best reduction."""

from __future__ import annotations

import optuna
import pytest

from autoprune import SearchSettings
from autoprune.results import StudyRecord
from autoprune.searcher.progress import best_so_far, progress_summary
from autoprune.testing import FakeStudy


def _study() -> optuna.Study:
    fake = FakeStudy(
        ["a", "b"],
        SearchSettings(max_accuracy_drop=1.0, rate_step=0.1),
        baseline={"accuracy": 95.0, "flops": 1_000_000, "params": 10_000},
    )

    def measure(plan):
        a, b = plan.rates["a"], plan.rates["b"]
        drop, flops = 2 * a + 0.5 * b, 1_000_000 * (1 - (a + b) / 2)
        return {"accuracy": 95.0 - drop, "accuracy_drop": drop, "flops": flops}

    fake.run(measure, trials=25)
    return fake.study


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


@pytest.mark.baseline("long")
def test_the_bar_counts_the_trials_and_shows_the_reduction_not_optunas_raw_value(search_baseline, capsys):
    result = search_baseline(
        max_accuracy_drop=5.0,
        trials=4,
        calibration_batches=2,
        uniform_starts=(0.1,),
        progress=True,
    )
    err = capsys.readouterr().err
    assert "4/4 trials" in err and "Best value" not in err
    assert progress_summary(result.record, result.record.feasible()) in err


def test_a_best_that_lost_nothing_reads_plus_zero_not_minus_zero():
    """Regression (issue 23): a drop of 0.001 points read ``at -0.00 pt``."""
    fake = FakeStudy(["a", "b"], baseline={"accuracy": 95.0, "flops": 1_000_000, "params": 10_000})
    fake.trial({"accuracy": 94.999, "accuracy_drop": 0.001, "flops": 400_000})
    record = fake.record
    assert progress_summary(record, record.feasible()) == "1 feasible, best 2.50x fewer FLOPs at +0.00 pt"
