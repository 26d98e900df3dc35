"""Bounds no plan can meet, refused before any training; a budget finer than the validation split, said."""

from __future__ import annotations

import logging

import optuna
import pytest
import torch

import autoprune
from autoprune.metrics import count_flops, count_params
from autoprune.plan import PlanSpace
from autoprune.results.record import StudyRecord
from autoprune.searcher import preflight
from autoprune.searcher.evaluation import Budget
from autoprune.searcher.feasibility import check_bounds, resolution_warning


@pytest.fixture
def small_cnn(digits):
    torch.manual_seed(0)
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8).eval()
    example = digits.val[0][0].unsqueeze(0)
    return model, example, autoprune.prunable_groups(model, example)


def _settings(**changes):
    return autoprune.SearchSettings(**{"max_accuracy_drop": 1.0, **changes})


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        (
            {"params": -1},
            (
                "constraints.params = -1 cannot be met: params (parameters) is never below 0, and a bound "
                "on a metric to minimize is the most a plan may have"
            ),
        ),
        ({"latency": -0.5}, "constraints.latency = -0.5 cannot be met: latency (ms) is never below 0"),
        (
            {"accuracy": 101},
            (
                "constraints.accuracy = 101 cannot be met: accuracy (%) is never above 100, and a bound on "
                "a metric to maximize is the least a plan may have"
            ),
        ),
    ],
)
def test_a_bound_outside_its_metrics_unit_is_refused(small_cnn, bounds, message):
    model, example, groups = small_cnn
    with pytest.raises(autoprune.AutopruneError) as err:
        check_bounds(_settings(constraints=bounds), model, example, groups)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("round_to", [1, 4])
def test_a_size_bound_below_the_most_pruned_plan_is_refused_and_one_at_it_is_not(small_cnn, digits, round_to):
    """The most pruned plan's FLOPs and parameters are those of the uniform plan at rate_max, as a trial
    prunes it: a bound at them is met by that plan, a bound just below by none."""
    model, example, groups = small_cnn
    settings = _settings(rate_max=0.6, round_to=round_to)
    plan = PlanSpace(settings, tuple(groups)).uniform(settings.rate_max)
    calibration = autoprune.searcher.calibration_batches(digits, 2, 32, 0)
    pruned = plan.apply(model, example, calibration)
    least = {"flops": count_flops(pruned, example), "params": count_params(pruned)}
    assert least["params"] < count_params(model)
    for name, value in least.items():
        check_bounds(settings.replace(constraints={name: value}), model, example, groups)
        with pytest.raises(autoprune.AutopruneError) as err:
            check_bounds(settings.replace(constraints={name: value - 1}), model, example, groups)
        assert str(err.value).startswith(
            f"constraints.{name} = {value - 1:g} cannot be met: the most pruned plan (every searched group at "
            f"rate_max = 0.6) still has {value:,} "
        )


def test_weight_pruning_alone_never_goes_below_the_models_own_size(small_cnn):
    model, example, groups = small_cnn
    settings = _settings(granularity="weight")
    check_bounds(settings.replace(constraints={"params": count_params(model)}), model, example, groups)
    with pytest.raises(autoprune.AutopruneError, match=f"still has {count_params(model):,} parameters"):
        check_bounds(settings.replace(constraints={"params": count_params(model) - 1}), model, example, groups)


def test_a_budget_under_three_validation_images_is_said_with_what_would_do():
    """Regression (issue 23): the quickstart's budget of 1 point is 2.9 of digits' 288 validation images."""
    warning = resolution_warning(_settings(), countable=True, val_images=288)
    assert warning == (
        "max_accuracy_drop = 1 point is 2.9 validation images of 288 (one image is 0.35 points): one image more "
        "or less decides which plans are feasible; a budget of at least 3 images' worth needs 300 or more "
        "validation images (or a budget of 1.05 points)"
    )
    assert Budget(200, 288, 1.05).allows(197) and not Budget(200, 288, 1.04).allows(197)  # 1.05 is 3 images
    assert resolution_warning(_settings(max_accuracy_drop=1.05), True, 288) is None
    assert resolution_warning(_settings(), True, 300) is None
    assert resolution_warning(_settings(), False, 288) is None  # a task scored as a whole: no images to count
    assert resolution_warning(_settings(max_accuracy_drop=0.0), True, 288).endswith(
        "a budget of at least 3 images' worth is a budget of 1.05 points"
    )


def test_the_preflight_logs_the_resolution_warning_and_records_it_with_a_new_study(digits, tmp_path, caplog):
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        preflight(model, digits, _settings(), storage=storage, study_name="fine")
    warning = resolution_warning(_settings(), True, len(digits.val))
    assert warning and caplog.messages == [warning]
    record = StudyRecord(optuna.load_study(study_name="fine", storage=storage))
    assert record.resolution_warning == warning and record.is_new
    preflight(model, digits, _settings(max_accuracy_drop=2.0), storage=storage, study_name="fine")
    assert StudyRecord(optuna.load_study(study_name="fine", storage=storage)).resolution_warning is None


def test_a_search_from_python_logs_and_records_the_resolution_warning_once(digits, tmp_path, caplog):
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    options = {"max_accuracy_drop": 1.0, "trials": 1, "calibration_batches": 1, "uniform_starts": ()}
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        result = autoprune.search(model, digits, storage=storage, study_name="api", **options)
    warning = resolution_warning(result.record.settings, True, len(digits.val))
    assert [m for m in caplog.messages if m.startswith("max_accuracy_drop")] == [warning]
    assert result.record.resolution_warning == warning


def test_a_search_from_python_with_finalists_and_no_finetuning_epochs_is_refused(digits):
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    with pytest.raises(autoprune.AutopruneError, match="finetune.epochs = 0 would leave them as they are"):
        autoprune.search(model, digits, max_accuracy_drop=1.0, finalists=2, finetune=autoprune.TrainSettings(epochs=0))


def test_with_val_images_the_resolution_is_that_of_the_images_trials_are_scored_on(digits, tmp_path, caplog):
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    options = {"max_accuracy_drop": 1.0, "trials": 1, "calibration_batches": 1, "uniform_starts": (), "val_images": 100}
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        result = autoprune.search(model, digits, **options)
    warning = resolution_warning(result.record.settings, True, 100)
    assert warning.startswith("max_accuracy_drop = 1 point is 1 validation images of 100")
    assert [m for m in caplog.messages if m.startswith("max_accuracy_drop")] == [warning]
