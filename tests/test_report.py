from __future__ import annotations

import random

import optuna
import pandas as pd

from autoprune import cli
from autoprune.results import StudyRecord, trials_frame, write_report

GROUPS = ["conv<1>", "block&2"]  # names that must be escaped in HTML


def _study(storage=None, name="a <b> & c") -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("groups", GROUPS)
    study.set_user_attr("importances", ["l1", "fpgm"])
    study.set_user_attr("objective", "flops")
    study.set_user_attr("max_accuracy_drop", 1.0)
    study.set_user_attr("baseline_accuracy", 95.0)
    study.set_user_attr("baseline_flops", 1_000_000)
    study.set_user_attr("baseline_params", 10_000)
    for rate in (0.2, 0.4):
        study.enqueue_trial({f"{g}.rate": rate for g in GROUPS} | {f"{g}.method": "l1" for g in GROUPS})
    rng = random.Random(0)

    def objective(trial):
        rates = [trial.suggest_float(f"{g}.rate", 0.0, 0.8, step=0.1) for g in GROUPS]
        for g in GROUPS:
            trial.suggest_categorical(f"{g}.method", ["l1", "fpgm"])
        flops = 1_000_000 * (1 - sum(rates) / 2)
        drop = sum(rates) * 1.2 + rng.uniform(-0.3, 0.3)
        trial.set_user_attr("accuracy", 95.0 - drop)
        trial.set_user_attr("accuracy_drop", drop)
        trial.set_user_attr("flops", flops)
        trial.set_user_attr("params", flops / 100)
        trial.set_constraint("accuracy_drop", drop - 1.0)
        return flops

    study.optimize(objective, n_trials=30)
    return study


def _brute_force_front(study: optuna.Study) -> set[int]:
    feasible = [t for t in study.trials if all(v <= 0 for v in t.constraints.values())]
    front = set()
    for t in feasible:
        beaten = any(
            o.user_attrs["accuracy"] >= t.user_attrs["accuracy"] and o.value <= t.value
            and (o.user_attrs["accuracy"] > t.user_attrs["accuracy"] or o.value < t.value)
            for o in feasible
        )
        if not beaten:
            front.add(t.number)
    return front


def test_report_files_and_tables(tmp_path):
    study = _study()
    index = write_report(study, tmp_path)
    for name in ("index.html", "pareto.png", "pareto.svg", "rates.png", "trials.csv", "pareto.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert sorted(trials["trial"]) == [t.number for t in study.trials]
    assert {f"{g}.rate" for g in GROUPS} <= set(trials.columns)
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    assert set(pareto["trial"]) == _brute_force_front(study) and len(pareto) > 0
    assert trials.loc[trials["trial"].isin([0, 1]), "uniform_rate"].tolist() == [0.2, 0.4]

    page = index.read_text()
    assert "a &lt;b&gt; &amp; c" in page and "a <b>" not in page
    assert page.count("data:image/png;base64,") == 2  # self-contained


def test_front_of_a_study_without_feasible_trials_is_empty(tmp_path):
    study = optuna.create_study()
    study.set_user_attr("groups", GROUPS)
    study.set_user_attr("max_accuracy_drop", 1.0)
    for drop in (2.0, 3.0):
        trial = study.ask()
        trial.set_user_attr("accuracy", 90.0 - drop)
        trial.set_constraint("accuracy_drop", drop - 1.0)
        study.tell(trial, 1000 * drop)
    assert StudyRecord(study).pareto_trials() == []
    write_report(study, tmp_path)
    assert pd.read_csv(tmp_path / "pareto.csv").empty and len(pd.read_csv(tmp_path / "trials.csv")) == 2


def test_multi_objective_front_applies_the_search_feasibility_rule(tmp_path):
    """Regression: the report took Optuna's best_trials, which counts a completed trial without
    the accuracy constraint as feasible; the search never does."""
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("groups", GROUPS)
    study.set_user_attr("objective", ["accuracy", "flops"])
    study.set_user_attr("max_accuracy_drop", 1.0)
    dist = {f"{g}.rate": FloatDistribution(0.0, 0.8) for g in GROUPS}

    def add(accuracy, flops, constraint, rate):
        system = {} if constraint is None else {"constraints:accuracy_drop": constraint}
        study.add_trial(optuna.trial.create_trial(
            values=[accuracy, flops], params={f"{g}.rate": rate for g in GROUPS}, distributions=dist,
            user_attrs={"accuracy": accuracy, "accuracy_drop": 95.0 - accuracy, "flops": flops, "params": flops / 10},
            system_attrs=system))

    add(94.5, 800.0, -0.5, 0.1)   # feasible
    add(94.0, 600.0, 0.0, 0.2)    # feasible, on the budget's edge
    add(99.0, 100.0, None, 0.5)   # dominates both, but never checked against the budget
    add(80.0, 50.0, 14.0, 0.7)    # over the budget
    record = StudyRecord(study)
    assert [t.number for t in record.pareto_trials()] == [1, 0]
    assert record.chosen_trial().number == 0
    write_report(study, tmp_path)
    assert list(pd.read_csv(tmp_path / "pareto.csv")["trial"]) == [1, 0]


def test_report_command_reads_the_storage(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _study(storage, name="only")
    assert cli.main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report" / "index.html").is_file()
    assert cli.main(["report", str(tmp_path), "--study", "olny"]) == 2
    assert "did you mean 'only'" in capsys.readouterr().err


def test_trials_frame_skips_running_trials():
    study = _study()
    study.ask()
    assert len(trials_frame(study)) == 30


def test_report_of_a_study_with_no_finished_trial(tmp_path):
    study = optuna.create_study()
    study.set_user_attr("objective", "flops")
    study.set_user_attr("max_accuracy_drop", 1.0)
    study.ask()
    write_report(study, tmp_path)
    assert pd.read_csv(tmp_path / "trials.csv").empty and "No feasible trial yet" in (tmp_path / "index.html").read_text()


def test_html_states_the_search_cost(tmp_path):
    study = _study()
    page = write_report(study, tmp_path).read_text()
    assert "30 finished trials" in page and "s of wall time" in page and "s per trial" in page
    assert "validation accuracy 95.00 %" in page and "1,000,000 FLOPs" in page
