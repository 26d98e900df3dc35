from __future__ import annotations

import html
import random
import re
import shlex

import optuna
import pandas as pd
import pytest

from autoprune import SearchSettings, cli
from autoprune.results import StudyRecord, trials_frame, write_report
from autoprune.results.figures import IMPORTANCE_MIN_TRIALS, parameter_importances, reduction_history
from autoprune.results.report import export_command
from autoprune.results.units import factor, human
from autoprune.testing import FakeStudy

GROUPS = ["conv<1>", "block&2"]  # names that must be escaped in HTML


def _study(storage=None, name="a <b> & c") -> optuna.Study:
    fake = FakeStudy(
        GROUPS,
        SearchSettings(max_accuracy_drop=1.0, importances=("l1", "fpgm"), rate_step=0.1),
        baseline={"accuracy": 95.0, "flops": 1_000_000, "params": 10_000},
        storage=storage,
        study_name=name,
    )
    for rate in (0.2, 0.4):
        fake.queue(fake.space.uniform(rate))
    rng = random.Random(0)

    def measure(plan):
        rates = [plan.rates[g] for g in GROUPS]
        flops = 1_000_000 * (1 - sum(rates) / 2)
        drop = sum(rates) * 1.2 + rng.uniform(-0.3, 0.3)
        return {"accuracy": 95.0 - drop, "accuracy_drop": drop, "flops": flops, "params": flops / 100}

    fake.run(measure, trials=30)
    return fake.study


def _brute_force_front(study: optuna.Study) -> set[int]:
    feasible = [t for t in study.trials if all(v <= 0 for v in t.constraints.values())]
    front = set()
    for t in feasible:
        beaten = any(
            o.user_attrs["accuracy"] >= t.user_attrs["accuracy"]
            and o.value <= t.value
            and (o.user_attrs["accuracy"] > t.user_attrs["accuracy"] or o.value < t.value)
            for o in feasible
        )
        if not beaten:
            front.add(t.number)
    return front


def test_report_files_and_tables(tmp_path):
    study = _study()
    index = write_report(study, tmp_path)
    for name in (
        "index.html",
        "pareto.png",
        "pareto.svg",
        "rates.png",
        "history.png",
        "importance.png",
        "trials.csv",
        "pareto.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert sorted(trials["trial"]) == [t.number for t in study.trials]
    assert {f"{g}.rate" for g in GROUPS} <= set(trials.columns)
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    assert set(pareto["trial"]) == _brute_force_front(study) and len(pareto) > 0
    assert trials.loc[trials["trial"].isin([0, 1]), "uniform_rate"].tolist() == [0.2, 0.4]

    page = index.read_text()
    assert "a &lt;b&gt; &amp; c" in page and "a <b>" not in page
    assert page.count("data:image/png;base64,") == 4  # self-contained: pareto, history, rates, importance
    assert "<script" not in page


def test_front_of_a_study_without_feasible_trials_is_empty(tmp_path):
    fake = FakeStudy(GROUPS, baseline={"accuracy": 90.0, "flops": 1000.0, "params": 100.0})
    for drop in (2.0, 3.0):
        fake.trial({"accuracy": 90.0 - drop, "accuracy_drop": drop, "flops": 1000 * drop})
    assert fake.record.pareto_trials() == []
    write_report(fake.study, tmp_path)
    assert pd.read_csv(tmp_path / "pareto.csv").empty and len(pd.read_csv(tmp_path / "trials.csv")) == 2


def test_multi_objective_front_applies_the_search_feasibility_rule(tmp_path):
    """Regression: the report took Optuna's best_trials, which counts a completed trial without
    the accuracy constraint as feasible; the search never does."""
    fake = FakeStudy(GROUPS, SearchSettings(max_accuracy_drop=1.0, objective=["accuracy", "flops"]))
    study = fake.study

    def add(accuracy, flops, constraint, rate):
        metrics = {"accuracy": accuracy, "accuracy_drop": 95.0 - accuracy, "flops": flops, "params": flops / 10}
        if constraint is not None:
            trial = fake.trial(metrics, fake.space.uniform(rate))
            assert trial.constraints == {"accuracy_drop": pytest.approx(constraint)}
            return
        # a trial another Optuna client added, which the study record never wrote: no constraint at all
        params = fake.space.params(fake.space.uniform(rate))
        study.add_trial(
            optuna.trial.create_trial(
                values=[accuracy, flops],
                params=params,
                distributions={k: study.trials[0].distributions[k] for k in params},
                user_attrs=metrics,
            )
        )

    add(94.5, 800.0, -0.5, 0.1)  # feasible
    add(94.0, 600.0, 0.0, 0.2)  # feasible, on the budget's edge
    add(99.0, 100.0, None, 0.5)  # dominates both, but never checked against the budget
    add(80.0, 50.0, 14.0, 0.7)  # over the budget
    record = StudyRecord(study)
    assert [t.number for t in record.pareto_trials()] == [1, 0]
    assert record.chosen_trial().number == 0
    write_report(study, tmp_path)
    assert list(pd.read_csv(tmp_path / "pareto.csv")["trial"]) == [1, 0]


def test_report_command_reads_the_storage(tmp_path, storage, capsys):
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
    fake = FakeStudy(GROUPS)
    fake.study.ask()
    write_report(fake.study, tmp_path)
    assert (
        pd.read_csv(tmp_path / "trials.csv").empty and "No feasible trial yet" in (tmp_path / "index.html").read_text()
    )


def test_html_states_how_the_search_ran_in_human_units(tmp_path):
    study = _study()
    page = write_report(study, tmp_path).read_text()
    assert "30 finished, " in page and "trials per minute" in page and "median trial" in page
    assert "validation accuracy 95.00 %" in page and "1 MFLOPs" in page and "10 k params" in page
    front = pd.read_csv(tmp_path / "pareto.csv")
    raw = [str(int(v)) for v in front["flops"]]
    assert not any(f"<td>{v}</td>" in page for v in raw)  # the table shows MFLOPs, the CSV the counts
    assert any(f"<td>{human(v, 'flops')}</td>" in page for v in front["flops"])


def test_the_chosen_trial_comes_first_with_its_factors_and_a_working_export_command(tmp_path):
    study = _study()
    record = StudyRecord(study)
    best = record.chosen_trial()
    page = write_report(study, tmp_path / "report").read_text()
    assert page.index(f"Chosen trial: #{best.number}") < page.index("<img")
    flops = best.user_attrs["flops"]
    assert f"<td>{human(flops, 'flops')}</td><td>{1_000_000 / flops:.2f}x fewer</td>" in page
    command = html.unescape(re.search(r"<pre><code>(.*?)</code></pre>", page, re.DOTALL).group(1))
    words = shlex.split(command)
    assert words[:3] == ["autoprune", "export", str(tmp_path)]
    assert words[words.index("--trial") + 1] == str(best.number) and "--storage" not in words
    # a study kept elsewhere is named, with the password of its URL hidden
    elsewhere = export_command(record, best.number, tmp_path, "postgresql://user:secret@localhost/db")
    assert "secret" not in elsewhere and "--storage" in elsewhere and "--study" in elsewhere


def test_human_units_and_factors():
    assert human(4_762_000, "flops") == "4.76 MFLOPs" and human(512, "flops") == "512 FLOPs"
    assert human(94_190, "params") == "94.2 k params" and human(1.234, "latency") == "1.23 ms"
    assert human(187_000, "size_bytes") == "183 KiB" and human(float("nan"), "flops") == "-"
    assert factor(4_762_000, 1_716_004) == "2.78x fewer" and factor(2.0, 1.0, "latency") == "2.00x faster"
    assert factor(1.0, 0.0) == "-"


def test_history_is_the_running_best_of_the_feasible_reductions(tmp_path):
    study = _study()
    record = StudyRecord(study)
    history = reduction_history(trials_frame(record), record)
    best, expected = float("nan"), []
    for t in sorted(study.trials, key=lambda t: t.number):
        if record.is_feasible(t):
            reduction = 1_000_000 / t.user_attrs["flops"]
            best = reduction if best != best else max(best, reduction)
        expected.append(best)
    assert history["best_within_budget"].tolist() == pytest.approx(expected, nan_ok=True)


def test_importance_finds_the_parameter_the_drop_depends_on():
    fake = FakeStudy(
        ["a", "b", "c"],
        baseline={"accuracy": 90.0, "flops": 100.0, "params": 100.0},
        sampler=optuna.samplers.RandomSampler(seed=1),
    )

    def measure(plan):
        a, c = plan.rates["a"], plan.rates["c"]
        # only a's rate costs accuracy, only c's rate saves FLOPs
        return {"accuracy": 90.0 - 5 * a, "accuracy_drop": 5 * a, "flops": 100.0 * (1 - c)}

    fake.run(measure, trials=IMPORTANCE_MIN_TRIALS - 1)
    record = fake.record
    assert parameter_importances(record, "accuracy_drop") is None  # too few trials to tell
    fake.run(measure, trials=30)
    assert next(iter(parameter_importances(record, "accuracy_drop"))) == "a.rate"
    assert next(iter(parameter_importances(record, "flops"))) == "c.rate"
