from __future__ import annotations

import dataclasses

import pytest

from autoprune import SearchSettings, TrainSettings
from autoprune.errors import AutopruneError
from autoprune.settings import load_study_file, parse_study_file

MINIMAL = {"study": {"max_accuracy_drop": 1.0}, "model": {"name": "small_cnn"}, "dataset": {"name": "digits"}}


def test_quickstart_parses_with_every_section():
    study = load_study_file("studies/quickstart.toml")
    assert study.name == "quickstart" and study.model == "resnet20" and study.dataset == "digits"
    assert study.model_params == {"width": 16} and study.dataset_params == {"val_fraction": 0.35}
    assert study.settings.importances == ("l1", "fpgm", "bn_scale")
    assert study.settings.max_accuracy_drop == 1.0 and study.settings.objective == "flops"
    assert study.train.epochs == 15 and study.path.endswith("studies/quickstart.toml")


def test_objectives_list_makes_a_multi_objective_study():
    study = parse_study_file({**MINIMAL, "study": {"max_accuracy_drop": 1.0, "objectives": ["accuracy", "latency"]}})
    assert study.settings.objective == ("accuracy", "latency") and study.settings.multi_objective


def test_defaults_come_from_the_settings_objects():
    study = parse_study_file(MINIMAL, name="mini")
    assert study.name == "mini" and str(study.out_dir) == "runs/mini"
    assert study.settings == SearchSettings(max_accuracy_drop=1.0)
    assert study.train == TrainSettings()


def test_settings_validate_themselves_and_convert():
    settings = SearchSettings(max_accuracy_drop=1, importances=["l1", "fpgm"], uniform_starts=[0.2])
    assert settings.max_accuracy_drop == 1.0 and isinstance(settings.max_accuracy_drop, float)
    assert settings.importances == ("l1", "fpgm") and settings.uniform_starts == (0.2,)
    assert settings.replace(seed=3).seed == 3
    with pytest.raises(AutopruneError, match="rate_max must be a number in \\[rate_min, 1\\), got 1.5"):
        settings.replace(rate_max=1.5)
    with pytest.raises(AutopruneError, match="unknown SearchSettings field 'rate_mx'; did you mean 'rate_max'"):
        settings.replace(rate_mx=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": 2**70}, "seed must be an integer from 0 to 2**32 - 1 = 4294967295 (what NumPy and Optuna's"),
        ({"seed": 2**32}, "seed must be an integer from 0 to 2**32 - 1"),
        ({"seed": -1}, "seed must be an integer from 0 to 2**32 - 1"),
        ({"importances": ["l1", "fpgm", "l1"]}, "importances must be a non-empty list of distinct registered"),
        ({"steps": [1, 1, 2]}, "steps must be an integer >= 1, or a list of distinct ones for the sampler"),
        ({"recovery_steps": 2}, "recovery_steps = 2 fine-tunes between pruning steps, but steps = 1 prunes in one"),
        ({"recovery_steps": 2, "steps": [1]}, "but steps = [1] prunes in one step: give steps > 1"),
    ],
)
def test_values_no_search_can_use_are_refused(changes, message):
    """Regression (issue 23): a seed beyond 2**32 was a traceback from torch, and repeated importances or
    steps, and recovery steps without a second step, were accepted without a word."""
    with pytest.raises(AutopruneError) as err:
        SearchSettings(max_accuracy_drop=1.0, **changes)
    assert message in str(err.value)


def test_the_edges_of_the_seed_and_recovery_rules_are_accepted():
    assert SearchSettings(max_accuracy_drop=1.0, seed=2**32 - 1).seed == 2**32 - 1
    stepped = SearchSettings(max_accuracy_drop=1.0, steps=[1, 2], recovery_steps=2)
    assert stepped.step_choices == (1, 2) and stepped.recovery_steps == 2
    assert SearchSettings(max_accuracy_drop=1.0, steps=3).step_choices == (3,)


def test_a_stored_study_that_the_later_rules_refuse_is_still_read_as_it_was_searched():
    """Studies recorded before the rules above: repeats were searched once, recovery steps without a
    second pruning step never ran."""
    stored = SearchSettings(max_accuracy_drop=1.0).to_attrs()
    stored.update(importances=["l1", "l1", "fpgm"], steps=[1, 1], recovery_steps=3)
    settings = SearchSettings.from_attrs(stored)
    assert settings.importances == ("l1", "fpgm") and settings.steps == (1,) and settings.recovery_steps == 0
    stored.update(steps=[1, 2, 2])
    assert SearchSettings.from_attrs(stored).steps == (1, 2) and SearchSettings.from_attrs(stored).recovery_steps == 3


def test_finalists_need_fine_tuning_epochs():
    with pytest.raises(AutopruneError, match=r"search.finalists = 2 .* but finetune.epochs = 0 would leave them"):
        parse_study_file({**MINIMAL, "search": {"finalists": 2}, "finetune": {"epochs": 0}})
    study = parse_study_file({**MINIMAL, "finetune": {"epochs": 0}})  # no finalists: export sets its own epochs
    assert study.finetune.epochs == 0
    with pytest.raises(AutopruneError, match="finetune.epochs = 0"):
        study.replace(settings=study.settings.replace(finalists=1))


def test_finetune_mode_is_a_finetune_key_and_the_baselines_recipe_has_none():
    assert parse_study_file({**MINIMAL, "finetune": {"mode": "gradual"}}).finetune.mode == "gradual"
    assert parse_study_file(MINIMAL).finetune.mode == "hard"
    with pytest.raises(AutopruneError, match="finetune.mode must be one of 'hard', 'soft', 'gradual', got str 'x'"):
        parse_study_file({**MINIMAL, "finetune": {"mode": "x"}})
    with pytest.raises(AutopruneError, match=r"unknown key in \[train\] 'mode'; it is a key of \[finetune\]$"):
        parse_study_file({**MINIMAL, "train": {"mode": "soft"}})
    assert "mode" not in TrainSettings().cache_identity()  # baselines cached before it existed stay valid


def test_settings_round_trip_through_study_attributes():
    settings = SearchSettings(
        max_accuracy_drop=0.5, objective=["accuracy", "flops"], timeout=30, importances=["l1", "taylor"]
    )
    attrs = settings.to_attrs()
    assert attrs["objective"] == ["accuracy", "flops"] and attrs["timeout"] == 30.0
    assert SearchSettings.from_attrs(attrs) == settings


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({**MINIMAL, "serch": {}}, "unknown section 'serch'; did you mean 'search'"),
        ({**MINIMAL, "search": {"rate_mx": 0.5}}, "unknown key in [search] 'rate_mx'; did you mean 'rate_max'"),
        (
            {**MINIMAL, "study": {"max_accuracy_drop": "1"}},
            "study.max_accuracy_drop must be a number >= 0, got str '1'",
        ),
        ({**MINIMAL, "study": {"max_accuracy_drop": -1.0}}, "study.max_accuracy_drop must be a number >= 0, got -1.0"),
        (
            {**MINIMAL, "constraints": {"latency": "fast"}},
            ("constraints.latency must be a number (the metric's bound), got str 'fast'"),
        ),
        ({**MINIMAL, "constraints": {"accuracy_drop": 2.0}}, "cannot bound accuracy_drop: study.max_accuracy_drop"),
        ({**MINIMAL, "constraints": []}, "[constraints] must be a table, got list"),
        ({"model": {"name": "x"}, "dataset": {"name": "digits"}}, "needs study.max_accuracy_drop"),
        ({"study": {"max_accuracy_drop": 1.0}, "dataset": {"name": "digits"}}, "needs model.name"),
        ({**MINIMAL, "search": {"rate_max": 1.0}}, "search.rate_max must be a number in [rate_min, 1), got 1.0"),
        ({**MINIMAL, "search": {"rate_min": 0.5, "rate_max": 0.3}}, "rate_max must be a number in [rate_min, 1)"),
        ({**MINIMAL, "search": {"uniform_starts": [0.9]}}, "search.uniform_starts must be a list of rates in"),
        ({**MINIMAL, "search": {"importances": []}}, "search.importances must be a non-empty list"),
        (
            {**MINIMAL, "study": {"max_accuracy_drop": 1.0, "trials": True}},
            "study.trials must be an integer >= 1, got bool",
        ),
        (
            {**MINIMAL, "study": {"max_accuracy_drop": 1.0, "timeout": -5}},
            "study.timeout must be a number of seconds > 0",
        ),
        ({**MINIMAL, "train": {"lr": 0}}, "train.lr must be a number > 0, got 0"),
        ({**MINIMAL, "model": {"name": "x", "params": {"num_classes": 3}}}, "cannot set num_classes: the dataset"),
        ({**MINIMAL, "model": {"name": 3}}, "model.name must be a registered model, got int 3"),
        ({**MINIMAL, "study": {"max_accuracy_drop": 1.0, "objectives": ["accuracy"]}}, "two or three"),
        (
            {**MINIMAL, "study": {"max_accuracy_drop": 1.0, "objective": "flops", "objectives": ["accuracy", "flops"]}},
            "not both",
        ),
    ],
)
def test_bad_study_files_are_one_clear_error(raw, fragment):
    with pytest.raises(AutopruneError) as err:
        parse_study_file(raw)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(AutopruneError, match="does not exist"):
        load_study_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(AutopruneError, match="not valid TOML"):
        load_study_file(bad)


@pytest.mark.parametrize(
    ("study", "constraints", "fragment"),
    [
        ({"objective": "flop"}, {}, "unknown objective 'flop'; did you mean 'flops'?"),
        ({"objectives": ["accuracy", "speed"]}, {}, "unknown objective 'speed'; valid: 'accuracy'"),
        ({}, {"latncy": 5.0}, "unknown metric in [constraints] 'latncy'; did you mean 'latency'?"),
    ],
)
def test_objectives_and_constraints_name_registered_metrics(study, constraints, fragment):
    from autoprune.searcher import check_importances

    settings = parse_study_file(
        {**MINIMAL, "study": {"max_accuracy_drop": 1.0, **study}, "constraints": constraints}
    ).settings
    with pytest.raises(AutopruneError) as err:
        check_importances(settings)
    assert fragment in str(err.value)


def test_constraints_are_read_as_metric_bounds_and_kept_in_the_study_attributes():
    settings = parse_study_file({**MINIMAL, "constraints": {"params": 1e6, "latency": 5}}).settings
    assert settings.bounds == {"latency": 5.0, "params": 1e6}
    assert type(settings).from_attrs(settings.to_attrs()) == settings


# -- a metric's options ([metrics.<name>]) ---------------------------------------------------


def test_a_metrics_options_are_read_from_its_table_with_its_defaults_for_the_rest():
    settings = parse_study_file({**MINIMAL, "metrics": {"robust_accuracy": {"corruption_images": 200}}}).settings
    options = settings.options_of("robust_accuracy")
    assert options.corruption_images == 200 and options.corruption_severities == (3,)
    assert options == SearchSettings(max_accuracy_drop=1.0).options_of("robust_accuracy").replace(corruption_images=200)
    given = SearchSettings(max_accuracy_drop=1.0, metric_options={"robust_accuracy": {"corruption_images": 200}})
    assert given == settings and hash(given) == hash(settings)


def test_a_metrics_options_are_stored_with_the_study_and_read_back():
    settings = SearchSettings(max_accuracy_drop=1.0, metric_options={"robust_accuracy": {"corruptions": ["jpeg"]}})
    attrs = settings.to_attrs()
    assert attrs["metric_options"] == {
        "robust_accuracy": {"corruptions": ["jpeg"], "corruption_severities": [3], "corruption_images": 1000}
    }
    assert SearchSettings.from_attrs(attrs) == settings
    assert SearchSettings(max_accuracy_drop=1.0).to_attrs()["metric_options"] == {}


def test_an_old_study_files_search_keys_are_read_as_the_metrics_options(caplog):
    old = {**MINIMAL, "search": {"corruption_severities": [1, 2]}}
    with caplog.at_level("WARNING", logger="autoprune"):
        settings = parse_study_file(old).settings
    assert settings.options_of("robust_accuracy").corruption_severities == (1, 2)
    assert "search.corruption_severities is now metrics.robust_accuracy.corruption_severities" in caplog.text
    with pytest.raises(AutopruneError, match=r"^search.corruption_images must be an integer >= 1, got 0$"):
        parse_study_file({**MINIMAL, "search": {"corruption_images": 0}})
    both = {**old, "metrics": {"robust_accuracy": {"corruption_severities": [1]}}}
    with pytest.raises(AutopruneError, match="give search.corruption_severities or metrics.robust_accuracy."):
        parse_study_file(both)


@pytest.mark.parametrize(
    ("metrics", "fragment"),
    [
        (
            {"robust_accuracy": {"corruption_images": 0}},
            "metrics.robust_accuracy.corruption_images must be an integer >= 1, got 0",
        ),
        (
            {"robust_accuracy": {"corruptions": ["fog"]}},
            (
                "metrics.robust_accuracy.corruptions must be a non-empty list of 'gaussian_noise', "
                "'gaussian_blur', 'brightness', 'contrast', 'jpeg', got ['fog']"
            ),
        ),
        (
            {"robust_accuracy": {"corruption_severities": [6]}},
            "metrics.robust_accuracy.corruption_severities must be a non-empty list of integers from 1 to 5, got [6]",
        ),
        (
            {"robust_accuracy": {"corruption_image": 10}},
            "unknown key in [metrics.robust_accuracy] 'corruption_image'; did you mean 'corruption_images'",
        ),
        ({"robust_acuracy": {}}, "unknown metric in [metrics] 'robust_acuracy'; did you mean 'robust_accuracy'"),
        ({"flops": {"x": 1}}, "metric 'flops' declares no options ([metrics.flops]); metrics with options: "),
        ({"robust_accuracy": 3}, "metrics.robust_accuracy must be a table of the metric's options, got 3"),
    ],
)
def test_a_wrong_option_is_one_clear_error(metrics, fragment):
    with pytest.raises(AutopruneError) as err:
        parse_study_file({**MINIMAL, "metrics": metrics})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_resume_check_names_every_option_that_differs():
    stored = SearchSettings(max_accuracy_drop=1.0, metric_options={"robust_accuracy": {"corruption_images": 10}})
    same = SearchSettings(max_accuracy_drop=1.0, metric_options={"robust_accuracy": {}}).replace(trials=3)
    assert stored.resume_conflicts(stored) == [] and same.resume_conflicts(SearchSettings(max_accuracy_drop=1.0)) == []
    assert SearchSettings(max_accuracy_drop=1.0).resume_conflicts(stored) == [
        ("metrics.robust_accuracy.corruption_images", 10, 1000)
    ]


def test_a_search_argument_that_became_an_option_says_where_it_went():
    from autoprune.searcher.optimize import search

    with pytest.raises(AutopruneError, match=r"is now an option of metric 'robust_accuracy': give metric_options="):
        search(None, None, max_accuracy_drop=1.0, corruption_images=10)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (1e-9, r"rate_step gives 800,000,001 rates per group .* at most 1,000 are searched \(rate_step >= 0.000801\)"),
        (0.0008, r"rate_step gives 1,001 rates per group"),
        (
            2,
            r"rate_step must be at most rate_max - rate_min = 0.8, got 2.0: the grid would hold rate_min \(0.0\) alone",
        ),
    ],
)
def test_a_grid_too_fine_to_build_or_too_coarse_to_search_is_refused(step, message):
    with pytest.raises(AutopruneError, match=message):
        SearchSettings(max_accuracy_drop=1.0, rate_step=step)
    assert SearchSettings(max_accuracy_drop=1.0, rate_step=0.8).rate_step == 0.8  # rate_min and rate_max
    one_rate = SearchSettings(max_accuracy_drop=1.0, rate_min=0.3, rate_max=0.3, rate_step=0.5, uniform_starts=(0.3,))
    assert one_rate.rate_max == 0.3  # a grid of one rate, asked for
