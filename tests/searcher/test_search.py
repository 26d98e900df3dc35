from __future__ import annotations

import copy

import optuna
import pytest
import torch

import autoprune
from autoprune import SearchSettings, search
from autoprune.engine import group_sizes
from autoprune.plan import Plan
from autoprune.results import StudyRecord, open_study

pytestmark = pytest.mark.baseline("standard")


def _search(baseline, digits, **kw):
    options = {
        "max_accuracy_drop": 2.0,
        "trials": 6,
        "importances": ("l1", "fpgm"),
        "seed": 0,
        "calibration_batches": 4,
        "uniform_starts": (0.0, 0.2),
        "warm_start": "uniform",
    }
    options.update(kw)
    return search(copy.deepcopy(baseline), digits, **options)


def test_study_is_readable_by_plain_optuna(baseline, digits, storage):
    result = _search(baseline, digits, storage=storage, study_name="tiny")
    study = optuna.load_study(study_name="tiny", storage=storage)
    attrs = study.user_attrs
    assert attrs["baseline_accuracy"] > 50 and attrs["baseline_flops"] > 0 and attrs["baseline_params"] > 0
    assert attrs["objective"] == "flops" and attrs["max_accuracy_drop"] == 2.0
    groups = autoprune.prunable_groups(baseline, digits.val[0][0].unsqueeze(0))
    assert attrs["groups"] == groups
    assert len(study.trials) == 6
    for trial in study.trials:
        assert set(trial.params) == {f"{g}.rate" for g in groups} | {f"{g}.method" for g in groups}
        for key in ("accuracy", "accuracy_drop", "flops", "params", "prune_seconds", "eval_seconds"):
            assert key in trial.user_attrs
        assert trial.value == trial.user_attrs["flops"]
        assert trial.constraints["accuracy_drop"] == pytest.approx(trial.user_attrs["accuracy_drop"] - 2.0)
    # the uniform-rate and global baselines come first (their parameters rounded down to the grid, their
    # plans exact), then the uniform starts
    references, record = attrs["references"], StudyRecord(study)
    grid = autoprune.plan.rate_grid(0.0, 0.8, 0.05)
    reference = references["uniform"]["rate"]
    assert {study.trials[0].params[f"{g}.rate"] for g in groups} == {max(r for r in grid if r <= reference + 1e-9)}
    assert record.plan(study.trials[0]).rates == pytest.approx(dict.fromkeys(groups, reference))
    assert record.plan(study.trials[1]).rates == references["global"]["plan"]
    assert {study.trials[2].params[f"{g}.rate"] for g in groups} == {0.0}
    assert {study.trials[3].params[f"{g}.rate"] for g in groups} == {0.2}
    assert result.best_trial.number == study.best_trial.number == StudyRecord(study).chosen_trial().number


def test_a_study_given_no_name_is_named_after_its_model_and_data_and_resumes(baseline, digits, storage):
    _search(baseline, digits, storage=storage, trials=2)
    assert optuna.get_all_study_names(storage) == ["small_cnn-digits"]  # not Optuna's no-name-<uuid>
    _search(baseline, digits, storage=storage, trials=3)
    trials = optuna.load_study(study_name="small_cnn-digits", storage=storage).trials
    assert [t.state.name for t in trials].count("COMPLETE") == 3


def test_rerun_resumes_instead_of_restarting(baseline, digits, storage):
    first = _search(baseline, digits, storage=storage, study_name="resume", trials=4)
    params = [t.params for t in first.study.trials]
    again = _search(baseline, digits, storage=storage, study_name="resume", trials=4)
    assert len(again.study.trials) == 4  # nothing left to do
    more = _search(baseline, digits, storage=storage, study_name="resume", trials=6)
    assert len(more.study.trials) == 6
    assert [t.params for t in more.study.trials[:4]] == params
    with pytest.raises(autoprune.AutopruneError, match="created with study.objective='flops' \\(not 'params'\\)"):
        _search(baseline, digits, storage=storage, study_name="resume", objective="params")
    with pytest.raises(autoprune.AutopruneError, match="created with study.seed=0"):
        _search(baseline, digits, storage=storage, study_name="resume", seed=7)


def test_a_resumed_search_draws_new_plans_not_those_its_seed_drew_before(baseline, digits, storage):
    options = {"storage": storage, "study_name": "again", "sampler": "random", "warm_start": "none"}
    _search(baseline, digits, trials=5, **options)
    more = _search(baseline, digits, trials=10, **options)
    drawn = [tuple(sorted(t.params.items())) for t in more.study.trials if t.state.name == "COMPLETE"]
    assert len(drawn) == 10 and len(set(drawn)) == 10  # before: trials 5.. repeated the first draws


def test_a_drawn_plan_that_a_trial_holds_is_not_scored_again_and_a_neighbour_runs_instead(baseline, digits):
    # 3 groups x 4 rates and one importance: 64 plans (fewer models: 8 channels round to fewer counts), so 30
    # trials of TPE draw some models twice
    result = _search(baseline, digits, trials=30, importances=("l1",), rate_step=0.25, rate_max=0.75, uniform_starts=())
    trials, record = result.study.trials, result.record
    sizes = group_sizes(baseline, result.example_inputs)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    drawn = [record.plan(t).structure_key(sizes) for t in complete if "fixed_params" not in t.system_attrs]
    assert len(complete) == 30 and len(set(drawn)) == len(drawn)  # no model drawn twice
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params)  # nor any parameters
    closed = [t for t in trials if t.state.name == "PRUNED"]
    assert closed  # the sampler did draw repeats, each closed unscored with the trial that holds them
    for duplicate in closed:
        held = trials[record.duplicate_of(duplicate)]
        same_model = record.plan(held).structure_key(sizes) == record.plan(duplicate).structure_key(sizes)
        assert same_model or held.params == duplicate.params
        assert "accuracy" not in duplicate.user_attrs
        stand_in = [t for t in trials if record.stands_in_for(t) == duplicate.number]
        assert len(stand_in) == 1 and stand_in[0].params != duplicate.params
        moved = [k for k in duplicate.params if stand_in[0].params[k] != duplicate.params[k]]
        steps = [abs(stand_in[0].params[k] - duplicate.params[k]) / 0.25 for k in moved]
        assert moved and all(s == pytest.approx(round(s)) and 1 <= round(s) <= 3 for s in steps)  # on the grid
        assert record.plan(stand_in[0]).structure_key(sizes) != record.plan(held).structure_key(sizes)


def test_rates_that_keep_the_same_channels_are_one_model_and_a_global_plan_is_its_resolved_local_plan():
    sizes = {"a": (16, 1), "b": (32, 1)}
    plan = Plan(rates={"a": 0.5, "b": 0.3}, methods={"a": "l1", "b": "fpgm"}, round_to=8, round_min=32)
    same = plan.replace(rates={"a": 0.5, "b": 0.26})  # 32 channels: 0.26 and 0.3 both keep 24
    assert plan.structure_key(sizes) == same.structure_key(sizes)
    assert plan.structure_key(sizes) != plan.replace(rates={"a": 0.45, "b": 0.3}).structure_key(sizes)
    assert plan.structure_key(sizes) != plan.replace(methods={"a": "fpgm", "b": "fpgm"}).structure_key(sizes)
    untouched = Plan(rates={"a": 0.0, "b": 0.1}, methods={"a": "l1", "b": "l1"}, round_to=8, round_min=32)
    assert untouched.structure_key(sizes) == untouched.replace(methods={"a": "fpgm", "b": "fpgm"}).structure_key(sizes)
    resolved = plan.replace(global_rate=0.35, global_max_rate=0.8)
    assert resolved.structure_key(sizes) == plan.structure_key(sizes)


def test_constraint_marks_trials_over_the_threshold_infeasible(baseline, digits):
    result = _search(baseline, digits, max_accuracy_drop=1.5, trials=4, uniform_starts=(0.0, 0.8), importances=("l1",))
    _, _, untouched, crushed = result.study.trials  # after the two baselines
    # rate 0 only recalibrates BatchNorm, which keeps (here: raises) the accuracy of a briefly trained baseline
    assert untouched.user_attrs["accuracy_drop"] < 1.5
    assert untouched.constraints["accuracy_drop"] <= 0
    assert crushed.user_attrs["accuracy_drop"] > 1.5 and crushed.constraints["accuracy_drop"] > 0
    assert crushed.value < untouched.value  # smaller, but over budget
    assert result.best_trial.number != crushed.number


def test_same_seed_gives_the_same_trials(baseline, digits):
    a = _search(baseline, digits, trials=5, uniform_starts=())
    b = _search(baseline, digits, trials=5, uniform_starts=())
    assert [t.params for t in a.study.trials] == [t.params for t in b.study.trials]
    assert [t.value for t in a.study.trials] == [t.value for t in b.study.trials]
    c = _search(baseline, digits, trials=5, uniform_starts=(), seed=1)
    assert [t.params for t in c.study.trials] != [t.params for t in a.study.trials]


def test_best_plan_rebuilds_the_best_model(baseline, digits):
    result = _search(baseline, digits, trials=4)
    plan, trial = result.best_plan, result.best_trial
    x = result.example_inputs
    model = autoprune.prune(
        copy.deepcopy(baseline),
        x,
        plan.rates,
        importance=dict(plan.methods),
        round_to=plan.round_to,  # the study's channel rounding, which the plan carries
        round_min=plan.round_min,
    )
    assert autoprune.measure(model, x)["flops"] == trial.user_attrs["flops"]
    best = result.best_model
    val = torch.utils.data.DataLoader(digits.val, batch_size=256)
    assert autoprune.metrics.accuracy(best, val) == pytest.approx(trial.user_attrs["accuracy"])


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"objective": "speed"}, "unknown objective 'speed'; valid: 'accuracy', 'accuracy_drop', 'flops'"),
        ({"max_accuracy_drop": -1}, "max_accuracy_drop must be a number >= 0, got -1"),
        ({"trials": 0}, "trials must be an integer >= 1, got 0"),
        ({"importances": ("l1", "l3")}, "unknown importance 'l3'"),
        ({"max_accuracy_drop": "1"}, "max_accuracy_drop must be a number >= 0, got str '1'"),
        ({"calibration_batches": 0}, "calibration_batches must be an integer >= 1, got 0"),
        ({"timeout": -5}, "timeout must be a number of seconds > 0, got -5"),
        ({"rate_mx": 0.5}, "unknown search\\(\\) argument 'rate_mx'; did you mean 'rate_max'"),
    ],
)
def test_bad_arguments_are_clear_errors(baseline, digits, kw, fragment):
    with pytest.raises(autoprune.AutopruneError, match=fragment):
        _search(baseline, digits, **kw)


def test_search_takes_a_settings_object_and_keyword_overrides(search_baseline, baseline, digits, storage):
    settings = SearchSettings(
        max_accuracy_drop=2.0, trials=3, importances=("l1",), calibration_batches=2, uniform_starts=(0.1,)
    )
    result = search_baseline(settings, trials=4, seed=5, storage=storage, study_name="obj")
    record = result.record
    assert record.settings == settings.replace(trials=4, seed=5)
    for key, value in settings.replace(trials=4, seed=5).to_attrs().items():
        assert record.attrs[key] == value  # one user attribute per field
    assert len(record.completed()) == 4
    with pytest.raises(autoprune.AutopruneError, match="needs max_accuracy_drop"):
        search(copy.deepcopy(baseline), digits, trials=2)


def test_resuming_with_another_batch_size_is_refused(baseline, digits, storage):
    """Regression: the resume check compared a hand-picked list of settings without batch_size."""
    _search(baseline, digits, storage=storage, study_name="b", trials=2)
    with pytest.raises(autoprune.AutopruneError, match="created with search.batch_size=128 \\(not 64\\)"):
        _search(baseline, digits, storage=storage, study_name="b", trials=2, batch_size=64)
    with pytest.raises(autoprune.AutopruneError, match="created with study.latency_batch_size=1 \\(not 4\\)"):
        _search(baseline, digits, storage=storage, study_name="b", trials=2, latency_batch_size=4)
    more = _search(baseline, digits, storage=storage, study_name="b", trials=3, timeout=60)  # budget may change
    assert len(more.record.completed()) == 3
    assert more.record.settings.trials == 3 and more.record.settings.timeout == 60.0


def test_resuming_on_a_baseline_with_other_weights_is_refused(baseline, digits, storage):
    """A rerun whose baseline was trained anew must not mix its trials with the old baseline's."""
    _search(baseline, digits, storage=storage, study_name="w", trials=2)
    other = copy.deepcopy(baseline)
    with torch.no_grad():
        other.fc.weight.mul_(1.01)
    with pytest.raises(autoprune.AutopruneError, match="baseline with other weights"):
        _search(other, digits, storage=storage, study_name="w", trials=3)


def _failing_every_other(monkeypatch):
    from autoprune.searcher.evaluation import Evaluator

    calls = {"n": 0}
    evaluate = Evaluator.evaluate

    def flaky(self, plan, **kwargs):
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise autoprune.PruningError("this plan cannot be pruned")
        return evaluate(self, plan, **kwargs)

    monkeypatch.setattr(Evaluator, "evaluate", flaky)


def test_failed_trials_do_not_count_towards_the_budget(baseline, digits, monkeypatch):
    """Regression: study.optimize(n_trials=remaining) counted failed trials, so a study with
    failures ended with fewer completed trials than asked for."""
    monkeypatch.setattr(
        autoprune.searcher.optimize, "prepare", lambda record, evaluator, ranking=None, budget=None: None
    )
    _failing_every_other(monkeypatch)
    result = _search(baseline, digits, trials=5)
    states = [t.state.name for t in result.study.trials]
    assert states.count("COMPLETE") == 5 and states.count("FAIL") == 4
    assert len(result.failed_trials) == 4


def test_a_search_whose_every_trial_fails_gives_up(baseline, digits, monkeypatch, storage):
    from autoprune.searcher.evaluation import Evaluator

    def broken(self, plan, **kwargs):
        raise autoprune.PruningError("never prunable")

    monkeypatch.setattr(Evaluator, "evaluate", broken)
    with pytest.raises(autoprune.AutopruneError, match="4 trials in a row failed.*never prunable"):
        _search(
            baseline, digits, trials=3, warm_start="sensitivity", max_failures=4, storage=storage, study_name="broken"
        )
    record = open_study(storage, "broken")
    assert [t.state.name for t in record.study.trials] == ["FAIL"] * 4
    references, curves = record.references, record.sensitivity
    assert references["uniform"]["rate"] is None and references["global"]["rate"] is None
    assert curves and all("never prunable" in row["failed"] for row in curves)


def test_search_needs_no_builtin_importance_it_does_not_use(baseline, digits, monkeypatch):
    """Regression: prune() resolved "l1" even when every group had its importance, so with
    AUTOPRUNE_PLUGINS excluding the built-in magnitude plugin every trial failed."""
    from autoprune import plugins

    monkeypatch.setenv(plugins.PLUGINS_ENV, "importance_random,importance_fpgm,metrics_builtin,tasks_builtin")
    monkeypatch.setattr(plugins, "_manager", None)
    monkeypatch.setattr(plugins, "_registries", None)
    assert "l1" not in autoprune.list_importances()
    result = _search(baseline, digits, trials=3, importances=("random", "fpgm"), uniform_starts=(0.3,))
    assert [t.state.name for t in result.study.trials] == ["COMPLETE"] * 3
    x = result.example_inputs
    groups = autoprune.prunable_groups(baseline, x)
    pruned = autoprune.prune(
        copy.deepcopy(baseline), x, dict.fromkeys(groups, 0.5), importance=dict.fromkeys(groups, "random")
    )
    assert autoprune.count_params(pruned) < autoprune.count_params(baseline)
    with pytest.raises(autoprune.UnknownNameError, match="'l1'"):  # a group without one needs the default
        autoprune.prune(copy.deepcopy(baseline), x, dict.fromkeys(groups, 0.5), importance={groups[0]: "random"})


def test_multi_objective_front_holds_only_feasible_trials(baseline, digits, tmp_path):
    from autoprune.results import write_report

    result = _search(
        baseline,
        digits,
        objective=["accuracy", "flops", "latency"],
        trials=8,
        max_accuracy_drop=1.0,
        uniform_starts=(0.0, 0.2, 0.8),
    )
    study = result.study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert study.user_attrs["objective"] == ["accuracy", "flops", "latency"]
    front = study.best_trials
    assert front and all(t.constraints["accuracy_drop"] <= 0 for t in front)
    for t in study.trials:
        assert t.values == [t.user_attrs["accuracy"], t.user_attrs["flops"], t.user_attrs["latency"]]
        assert t.user_attrs["latency"] > 0
    best = result.best_trial
    assert best in front and best.user_attrs["accuracy"] == max(t.user_attrs["accuracy"] for t in front)
    write_report(study, tmp_path)
    import pandas as pd

    assert set(pd.read_csv(tmp_path / "pareto.csv")["trial"]) == {t.number for t in front}


def test_bad_objective_lists(baseline, digits):
    for bad in (["accuracy"], ["accuracy", "accuracy"], ["a", "b", "c", "d"]):
        with pytest.raises(autoprune.AutopruneError, match="or a list of two or three distinct"):
            _search(baseline, digits, objective=bad)
    with pytest.raises(autoprune.AutopruneError, match="unknown objective 'speed'; valid: 'accuracy'"):
        _search(baseline, digits, objective=["accuracy", "speed"])


def test_prune_only_searches_the_named_modules_alone(baseline, digits):
    from autoprune.searcher.evaluation import searched_groups

    detector = ["backbone.stem.0", "backbone.smooth", "head.classification_head.conv.0", "head.regression_head.conv.0"]
    assert searched_groups(detector, ("backbone",)) == ["backbone.stem.0", "backbone.smooth"]
    assert searched_groups(detector, ("head.classification_head",)) == ["head.classification_head.conv.0"]
    assert searched_groups(detector, ()) == detector
    with pytest.raises(
        autoprune.AutopruneError,
        match=r"^search.prune_only \['backbones'\] matches none of the "
        r"model's 4 prunable groups; their names start with: "
        r"backbone, head$",
    ):
        searched_groups(detector, ("backbones",))

    result = _search(
        baseline,
        digits,
        trials=4,
        prune_only=("features.0", "features.3"),
        max_accuracy_drop=50.0,
        uniform_starts=(0.5,),
        scope="both",
    )
    assert result.record.groups == ["features.0", "features.3"]
    for trial in result.record.completed():  # local and global plans alike leave features.7 whole
        rates = result.record.plan(trial).rates
        assert set(rates) <= {"features.0", "features.3"} and any(rates.values())
    last_conv = [m for m in result.best_model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert last_conv.out_channels == [m for m in baseline.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels


def test_a_search_waiting_for_a_trial_running_elsewhere_says_so(baseline, digits, storage, caplog):
    options = {"storage": storage, "study_name": "wait", "heartbeat_interval": 1}
    _search(baseline, digits, trials=2, **options)
    optuna.load_study(study_name="wait", storage=storage).ask()  # a trial another worker runs
    with caplog.at_level("WARNING", logger="autoprune"):
        result = _search(baseline, digits, trials=3, **options)
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for trial")]
    expected = (
        "waiting for trial #2: running in another worker, or left by one that stopped (then failed "
        "and run again once its heartbeat is 3 s old)"
    )
    assert waiting == [expected]
    assert len(result.record.completed()) == 3  # its worker never beat: failed once stale, and run here


def test_the_retry_of_a_trial_a_killed_worker_left_running_is_closed_when_its_plan_was_scored_since(
    baseline, digits, storage
):
    """A worker killed while it closed a duplicate leaves the duplicate RUNNING; Optuna's retry of it would
    score the held plan a second time."""
    first = _search(baseline, digits, storage=storage, study_name="retry", trials=3, uniform_starts=())
    scored = first.study.trials[-1]
    assert scored.state.name == "COMPLETE"
    first.study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=scored.params,
            distributions=scored.distributions,
            system_attrs={"failed_trial": 99, "retry_history": [99], "fixed_params": scored.params},
        )
    )  # what optuna.storages.RetryHeartbeatStaleTrialCallback queues for a stale trial of those parameters
    more = _search(baseline, digits, storage=storage, study_name="retry", trials=4, uniform_starts=())
    trials, record = more.study.trials, more.record
    retry = trials[3]
    assert record.retries(retry) == 99 and retry.state.name == "PRUNED"
    assert record.duplicate_of(retry) == scored.number
    complete = [tuple(sorted(t.params.items())) for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and len(set(complete)) == 4
