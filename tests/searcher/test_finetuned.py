"""The fine-tuned budget: rungs of one fine-tuning run, the trial pruner that stops plans at a rung, the
baselines bisected on the fine-tuned score, and the chosen trial's fine-tuned weights as what export writes."""

from __future__ import annotations

import copy

import optuna
import pandas as pd
import pytest
import torch
from conftest import DIGITS_RECIPES
from optuna.trial import TrialState

import autoprune
from autoprune import TrainSettings, train
from autoprune.batches import calibration_batches, validation_batches
from autoprune.errors import AutopruneError
from autoprune.metrics import accuracy
from autoprune.searcher.finetuned import MIN_FINISHED, RECOVERY_PRIOR, SLACK_FACTOR, RungPruner
from autoprune.training import train_rungs

pytestmark = pytest.mark.baseline("brief")

RECIPE = TrainSettings(epochs=1, lr=0.01, batch_size=64)


def finetuned_search(model, digits, storage: str, **settings):
    """A fine-tuned-budget search of a copy of ``model`` in ``storage``: the module study's settings unless
    ``settings`` change them."""
    settings = {"max_accuracy_drop": 2.0, "trials": 10, "finetune": RECIPE, "study_name": "ft", **settings}
    return autoprune.search(copy.deepcopy(model), digits, budget="finetuned", storage=storage, **settings)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_rungs_pause_one_run_that_ends_with_the_weights_train_gives(baseline, digits):
    alone = train(copy.deepcopy(baseline), digits, RECIPE.replace(epochs=2), seed=3)
    model = copy.deepcopy(baseline)
    epochs = []
    for done in train_rungs(model, digits, RECIPE.replace(epochs=2), (0.1, 0.5, 1.0), seed=3):
        assert not model.training  # scored in eval mode
        epochs.append(done)
        torch.rand(100)  # whatever a rung's scoring draws leaves the training as it was
        accuracy(model, validation_batches(digits, 64, 0))
    steps = 2 * len(torch.utils.data.DataLoader(digits.train, batch_size=64))
    assert epochs == [round(0.1 * steps) * 2 / steps, round(0.5 * steps) * 2 / steps, 2.0]
    for key, value in _weights(alone).items():
        assert torch.equal(model.state_dict()[key], value), key


def test_stopping_at_a_rung_stops_the_training_there(baseline, digits):
    model = copy.deepcopy(baseline)
    rungs = train_rungs(model, digits, RECIPE, (0.2, 1.0), seed=0)
    first = next(rungs)
    after_first = _weights(model)
    rungs.close()
    assert first < 1.0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in after_first.items())
    assert not all(torch.equal(baseline.state_dict()[k], v) for k, v in after_first.items())


def _finished(study, drops):
    """A trial that climbed every rung, with these drops at rung 0, 1, ..."""
    study.add_trial(
        optuna.trial.create_trial(
            value=1.0,
            intermediate_values=dict(enumerate(drops)),
            user_attrs={"rungs": [{"accuracy_drop": d} for d in drops]},
        )
    )


def test_a_rung_stops_a_plan_that_even_the_largest_recovery_seen_leaves_over_the_budget():
    pruner = RungPruner(max_drop=1.0, rungs=2)
    study = optuna.create_study(pruner=pruner)
    prior = 1 - 1 / RECOVERY_PRIOR
    assert pruner.recovered_share(study, 0) == pytest.approx(prior)  # no trial finished: the prior
    # rung-0 drops over the budget, recovered by 80 %, 50 % and 90 %; one within the budget says nothing
    for drops in ([5.0, 3.0, 1.0], [2.0, 2.0, 1.0], [10.0, 4.0, 1.0], [0.5, 0.8, 0.2]):
        _finished(study, drops)
    assert pruner.recovered_share(study, 0) == pytest.approx(0.9)
    assert pruner.recovered_share(study, 1) == pytest.approx(0.75)  # of 4.0 at rung 1, 3.0 recovered
    assert pruner.limit(study, 0) == pytest.approx(1.0 * SLACK_FACTOR / 0.1)
    assert pruner.limit(study, 1) == pytest.approx(1.0 * SLACK_FACTOR / 0.25)
    assert pruner.limit(study, 2) == 1.0  # the last rung is the budget itself
    trial = study.ask()
    trial.report(pruner.limit(study, 0) - 0.01, 0)
    assert not trial.should_prune()
    trial.report(pruner.limit(study, 1) + 0.01, 1)  # rung 1 rules it out though rung 0 did not
    assert trial.should_prune()
    other = study.ask()
    other.report(pruner.limit(study, 0) + 0.01, 0)
    assert other.should_prune()


def test_before_enough_trials_finished_a_rung_allows_at_least_the_prior_recovery():
    pruner = RungPruner(max_drop=1.0, rungs=2)
    study = optuna.create_study(pruner=pruner)
    _finished(study, [2.0, 1.5, 1.0])  # recovered only 50 %: too few trials to trust over the prior
    assert pruner.recovered_share(study, 0) == pytest.approx(1 - 1 / RECOVERY_PRIOR)
    for _ in range(MIN_FINISHED - 1):
        _finished(study, [2.0, 1.5, 1.0])
    assert pruner.recovered_share(study, 0) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def finetuned_study(tmp_path_factory, digits, train_digits_cnn):
    """A fine-tuned-budget search of the digits baseline, 10 trials, in an SQLite study with artifacts."""
    folder = tmp_path_factory.mktemp("finetuned")
    model = train_digits_cnn(**DIGITS_RECIPES["brief"])
    storage = f"sqlite:///{folder / 'study.db'}"
    return finetuned_search(model, digits, storage), model, storage, folder


def test_a_finetuned_budget_scores_plans_after_fine_tuning_and_stops_some_at_a_rung(finetuned_study):
    result, _, _, _ = finetuned_study
    record = result.record
    trials = record.completed()
    assert len(trials) == 10
    finished = [t for t in trials if "stopped" not in t.user_attrs]
    stopped = [t for t in trials if "stopped" in t.user_attrs]
    assert finished and stopped
    for t in finished:
        rungs = t.user_attrs["rungs"]
        assert [r["fraction"] for r in rungs] == [0.0, 0.1, 0.3, 1.0]
        assert t.user_attrs["accuracy"] == rungs[-1]["accuracy"]
        assert t.user_attrs["recalibrated_accuracy"] == rungs[0]["accuracy"]
        assert t.user_attrs["finetune_epochs"] == 1.0
        assert t.intermediate_values == {k: r["accuracy_drop"] for k, r in enumerate(rungs)}
    for t in stopped:  # infeasible whatever their last rung scored, and never fine-tuned to the end
        assert not record.is_feasible(t)
        assert t.user_attrs["finetune_epochs"] < 1.0
        assert len(t.user_attrs["rungs"]) == t.user_attrs["stopped"]["rung"] + 1
    # fine-tuning recovers accuracy: a finished plan scores better than recalibrated alone, on the whole
    gains = [t.user_attrs["accuracy"] - t.user_attrs["recalibrated_accuracy"] for t in finished]
    assert sum(gains) > 0


def test_the_baselines_are_bisected_on_the_fine_tuned_score(finetuned_study, digits):
    result, model, _, _ = finetuned_study
    record = result.record
    uniform = record.references["uniform"]
    assert uniform["rate"] is not None and uniform["accuracy_drop"] <= 2.0
    assert uniform["finetune_epochs"] == uniform["evaluations"] * RECIPE.epochs
    settings = record.settings
    plan = record.space.uniform(uniform["rate"])
    calibration = calibration_batches(digits, settings.calibration_batches, settings.batch_size, settings.seed)
    pruned = plan.apply(model, result.example_inputs, calibration)
    assert accuracy(pruned, validation_batches(digits, settings.batch_size, settings.seed)) == pytest.approx(
        uniform["recalibrated_accuracy"]
    )
    train(pruned, digits, RECIPE, seed=settings.seed)
    assert accuracy(pruned, validation_batches(digits, settings.batch_size, settings.seed)) == pytest.approx(
        uniform["accuracy"]
    )


def test_the_chosen_trials_fine_tuned_weights_are_what_export_writes(finetuned_study, digits, tmp_path):
    result, _, storage, _ = finetuned_study
    chosen = result.best_trial
    assert chosen is not None and "finetuned_weights" in chosen.user_attrs
    assert accuracy(result.best_model, validation_batches(digits, 64, 0)) == pytest.approx(
        chosen.user_attrs["accuracy"]
    )
    study = autoprune.Study.load(storage=storage, name="ft")
    exported = study.export(tmp_path / "model.pt")
    assert exported["trial"] == chosen.number and exported["finetuned"]
    assert exported["pruned"]["val_accuracy"] == pytest.approx(chosen.user_attrs["accuracy"])
    loaded = autoprune.load(tmp_path / "model.pt")
    assert accuracy(loaded, validation_batches(digits, 64, 0)) == pytest.approx(chosen.user_attrs["accuracy"])


def test_kept_fine_tuned_weights_are_not_fine_tuned_softly_from_the_baseline(finetuned_study, tmp_path):
    _, _, storage, _ = finetuned_study
    study = autoprune.Study.load(storage=storage, name="ft")
    with pytest.raises(AutopruneError, match="kept the fine-tuned weights of its pruned model"):
        study.export(tmp_path / "m.pt", finetune_epochs=1, finetune_mode="soft")


def test_a_resumed_finetuned_budget_must_fine_tune_with_the_same_recipe(finetuned_study, digits):
    _, model, storage, _ = finetuned_study
    with pytest.raises(AutopruneError, match=r"finetune\.lr=0\.01 \(not 0\.02\)"):
        finetuned_search(model, digits, storage, finetune=RECIPE.replace(lr=0.02))


def test_a_recalibrated_budget_reports_nothing_to_optuna(search_baseline):
    result = search_baseline(max_accuracy_drop=1.0, trials=3)
    assert all(not t.intermediate_values for t in result.study.get_trials(states=(TrialState.COMPLETE,)))
    assert isinstance(result.study.pruner, optuna.pruners.NopPruner)


def test_the_report_shows_every_finished_trials_score_at_each_rung_and_the_fine_tuning_spent(finetuned_study):
    from autoprune.results.report import write_report
    from autoprune.results.rungs import rung_summary

    result, _, _, folder = finetuned_study
    record = result.record
    summary = rung_summary(record)
    trials = record.completed()
    assert len(summary["finished"]) + sum(summary["stopped"].values()) == len(trials)
    assert summary["trial_epochs"] == pytest.approx(sum(t.user_attrs["finetune_epochs"] for t in trials))
    assert summary["reference_epochs"] == sum(r["finetune_epochs"] for r in record.references.values())
    assert summary["fractions"] == [0.0, 0.1, 0.3, 1.0]
    text = write_report(record, folder / "report").read_text()
    assert "Fine-tuned budget: accuracy at every rung" in text
    assert "lost after fine-tuning" in text
    for row in summary["finished"]:
        assert f"<th>#{row['trial']}" in text
    assert f"{summary['trial_epochs']:.1f} epochs of the training split in the trials" in text
    frame = pd.read_csv(folder / "report" / "trials.csv")
    assert set(frame["stopped_at_rung"].dropna()) <= {0.0, 1.0, 2.0}
    assert frame["stopped_at_rung"].notna().sum() == sum(summary["stopped"].values())


def test_a_study_kept_in_memory_keeps_the_chosen_trials_fine_tuned_weights_in_memory(search_baseline, digits):
    result = search_baseline(max_accuracy_drop=3.0, trials=4, budget="finetuned", finetune=RECIPE)
    chosen = result.best_trial
    assert chosen is not None and not result.record.has_finetuned_weights(chosen)  # no artifact folder
    recalibrated = result.best_plan.apply(result.baseline, result.example_inputs, result.calibration)
    val = validation_batches(digits, 64, 0)
    assert accuracy(result.best_model, val) == pytest.approx(chosen.user_attrs["accuracy"])
    assert accuracy(recalibrated, val) == pytest.approx(chosen.user_attrs["recalibrated_accuracy"])


def test_a_soft_finetuned_budget_scores_and_exports_the_cut_model_and_its_baselines_fine_tune_softly(
    tmp_path, digits, train_digits_cnn
):
    """finetune.mode = "soft": every plan is reached while the baseline is fine-tuned; the chosen trial's kept
    weights are the cut model's (the plan's widths), and the baselines' scores are soft fine-tunes too."""
    from autoprune.plan.elastic import finetune_plan

    model = train_digits_cnn(**DIGITS_RECIPES["brief"])
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    recipe = RECIPE.replace(mode="soft")
    result = finetuned_search(
        model, digits, storage, max_accuracy_drop=3.0, trials=5, finetune=recipe, study_name="soft"
    )
    record, chosen = result.record, result.best_trial
    assert record.budget_recipe["mode"] == "soft"
    assert chosen is not None and "finetuned_weights" in chosen.user_attrs
    val = validation_batches(digits, 64, 0)
    exported = autoprune.Study.load(storage=storage, name="soft").export(tmp_path / "model.pt")
    assert exported["trial"] == chosen.number and exported["finetuned"]
    assert exported["pruned"]["val_accuracy"] == pytest.approx(chosen.user_attrs["accuracy"])
    assert exported["pruned"]["flops"] == pytest.approx(chosen.user_attrs["flops"])
    settings = record.settings
    calibration = calibration_batches(digits, settings.calibration_batches, settings.batch_size, settings.seed)
    uniform = record.references["uniform"]
    plan = record.space.uniform(uniform["rate"])
    tuned = finetune_plan(model, result.example_inputs, plan, digits, recipe, calibration, mode="soft")
    assert accuracy(tuned, val) == pytest.approx(uniform["accuracy"])


def test_a_recipe_stored_before_finetune_mode_existed_resumes_as_mode_hard(finetuned_study, digits):
    _, model, storage, _ = finetuned_study
    study = optuna.load_study(study_name="ft", storage=storage)
    stored = dict(study.user_attrs["budget_recipe"])
    study.set_user_attr("budget_recipe", {k: v for k, v in stored.items() if k != "mode"})
    try:
        result = finetuned_search(model, digits, storage)
        assert len(result.record.completed()) == 10
    finally:
        study.set_user_attr("budget_recipe", stored)
