from __future__ import annotations

import html
import random
import re
import shlex

import optuna
import pandas as pd
import pytest

import autoprune
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
    # a plan that got slower (or larger) says so: never "0.88x faster"
    assert factor(4.3, 4.9, "latency") == "1.14x slower" and factor(10, 11) == "1.10x more"
    assert factor(100, 100.2, "latency") == "1.00x faster"  # no change to two places


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


def test_changes_durations_and_score_names_read_as_people_write_them():
    """Regression (issue 23): ``-0.00 pt``, ``0.9 min``, ``map``."""
    from autoprune.results.units import change, duration, fixed, score, score_label, score_name, signed

    assert signed(-0.001) == "+0.00" and signed(0.004) == "+0.00" and signed(-0.35) == "-0.35"
    assert change(0.001) == "+0.00 points" and change(0.69, "pt") == "-0.69 pt" and change(-0.5) == "+0.50 points"
    assert fixed(-0.001) == "0.00" and fixed(-0.35) == "-0.35" and score("accuracy", -0.001) == "0.00 %"
    assert duration(0.9 * 60) == "54 s" and duration(3.24) == "3.2 s" and duration(59.4) == "59 s"
    assert duration(60) == "1.0 min" and duration(150) == "2.5 min" and duration(5400) == "1.5 h"
    assert (score_name("map"), score_name("miou"), score_name("accuracy"), score_name("road")) == (
        "mAP",
        "mIoU",
        "accuracy",
        "road",
    )
    assert score_label("miou") == "mIoU, points"


BASELINE_40 = {"accuracy": 40.0, "flops": 1_000_000, "params": 10_000}


def _detection_study() -> FakeStudy:
    """A made-up study of a detector: its score is COCO mAP, one trial collapsed far below the budget."""
    fake = FakeStudy(GROUPS, SearchSettings(max_accuracy_drop=2.0, rate_step=0.1), baseline=BASELINE_40)
    fake.record.write_attrs({"task": "detection", "score": "map", "score_label": "COCO mAP@[.5:.95], points"})
    for drop, flops in ((0.001, 900_000), (1.5, 600_000), (4.0, 500_000), (38.0, 200_000)):
        fake.trial({"accuracy": 40.0 - drop, "accuracy_drop": drop, "flops": flops, "params": flops / 100})
    return fake


def test_a_report_names_the_score_by_its_display_name_and_a_change_of_zero_as_plus_zero(tmp_path):
    """Regression: ``validation map``, ``map_drop``, ``map against flops``; ``-0.00`` for a drop of 0.001."""
    fake = _detection_study()
    fake.trial({"accuracy": 40.001, "accuracy_drop": -0.001, "flops": 950_000, "params": 9_500})
    page = write_report(fake.study, tmp_path).read_text()
    page = page[: page.index("<details>")]  # the study's raw settings below name the score as recorded
    assert "validation mAP" in page and "mAP against flops" in page and "<th>mAP drop</th>" in page
    assert "validation map" not in page and "map_drop" not in page and ">map<" not in page
    assert "-0.00" not in page and "+0.00 points" not in page  # the chosen trial lost 1.5 points
    front = html.unescape(page[page.index("Pareto front (") :])
    assert "<td>0.00</td>" in front  # the trial 0.001 better than the baseline, in the front table
    one = FakeStudy(GROUPS, baseline=BASELINE_40)
    one.trial({"accuracy": 39.999, "accuracy_drop": 0.001, "flops": 900_000, "params": 9_000})
    page = write_report(one.study, tmp_path / "one").read_text()
    assert "<td>+0.00 points</td>" in page and "-0.00" not in page
    assert "Pareto front (1 trial)</h2>" in page  # not "1 trials"


def test_the_pareto_plot_shows_every_trial_its_legend_counts():
    """Regression: the y axis stopped 3 budgets below the threshold, so a collapsed detector trial that the
    legend counted "over the budget" was off the plot."""
    from autoprune.results.figures import plot_pareto

    fake = _detection_study()
    record = fake.record
    frame = trials_frame(record)
    fig = plot_pareto(frame, pd.DataFrame(columns=frame.columns), record, "flops")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low < 2.0 and high > 40.0  # the collapsed trial (mAP 2) and the baseline (mAP 40)
    counted = {t.get_text() for t in ax.get_legend().get_texts()}
    assert "over the budget (2 trials)" in counted and "within the budget (2 trials)" in counted
    assert "mAP against flops" in ax.get_title()


def test_a_huge_budget_draws_no_absurd_line_and_warns_of_no_overflow(tmp_path):
    """Regression: ``max_accuracy_drop = 1e308`` put the budget line (and the sensitivity plot's axis) at
    1e308, and matplotlib warned of an overflow."""
    import warnings

    fake = FakeStudy(GROUPS, SearchSettings(max_accuracy_drop=1e308, rate_step=0.1), baseline=BASELINE_40)
    for drop in (0.5, 3.0, 20.0):
        fake.trial({"accuracy": 40.0 - drop, "accuracy_drop": drop, "flops": 1e6 * (1 - drop / 40), "params": 1e4})
    rows = [
        {"group": g, "rate": r, "accuracy_drop": 10 * r, "flops": 1e6, "params": 1e4, "evaluated": 1, "failed": False}
        for g in GROUPS
        for r in (0.0, 0.5)
    ]
    fake.record.write_sensitivity(rows, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        write_report(fake.study, tmp_path)
    from autoprune.results.figures import plot_pareto, plot_sensitivity
    from autoprune.results.report import sensitivity_frame

    record = fake.record
    frame = trials_frame(record)
    for fig in (
        plot_pareto(frame, frame.iloc[:0], record, "flops"),
        plot_sensitivity(record, sensitivity_frame(record)),
    ):
        low, high = fig.axes[0].get_ylim()
        assert -50 < low < high < 100, (low, high)
        assert any("budget: 1e+308 points" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert (tmp_path / "sensitivity.png").is_file()


def test_the_history_plot_numbers_trials_with_integers():
    """Regression: three trials drew ticks at trial 0.25, 0.5, ..."""
    from autoprune.results.figures import plot_history

    fake = FakeStudy(GROUPS, baseline=BASELINE_40)
    for drop in (0.2, 0.4, 0.6):
        fake.trial({"accuracy": 40.0 - drop, "accuracy_drop": drop, "flops": 1e6 * (1 - drop), "params": 1e4})
    fig = plot_history(trials_frame(fake.record), fake.record)
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if fig.axes[0].get_xlim()[0] <= t <= fig.axes[0].get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_wall_time_under_a_minute_reads_in_seconds(tmp_path):
    """Regression: a 54-second search read ``0.9 min``."""
    page = write_report(_study(), tmp_path).read_text()
    assert re.search(r"<td>\d+(\.\d)? s from the first trial", page) and "min from the first" not in page


def test_the_chosen_trial_says_what_it_is_in_a_multi_objective_study(tmp_path):
    """Regression: the most accurate Pareto point was called "the smallest within the budget"."""
    fake = FakeStudy(GROUPS, SearchSettings(max_accuracy_drop=1.0, objective=["accuracy", "flops"]))
    for accuracy, flops in ((94.5, 800.0), (94.2, 600.0)):
        fake.trial({"accuracy": accuracy, "accuracy_drop": 95.0 - accuracy, "flops": flops, "params": flops / 10})
    page = write_report(fake.study, tmp_path).read_text()
    assert fake.record.chosen_trial().number == 0  # the more accurate one, not the smaller
    assert "The smallest" not in page
    assert "The point of the Pareto front (of accuracy, flops) with the highest accuracy within the budget" in page
    single = write_report(_study(), tmp_path / "single").read_text()
    assert "The lowest flops within the budget" in single


def test_constraint_lines_and_the_chosen_trial_show_each_bound_with_its_unit(tmp_path, temporary_plugin):
    """Regression: ``weight_kib <= 200 (the baseline: 367.9)`` although the metric declares its unit; no
    ``ms`` on a latency bound; the constrained metric's value missing from the chosen trial's table."""

    class KiB:
        @autoprune.hookimpl
        def autoprune_register_metrics(self, register):
            register("weight_kib", lambda model, context: 0.0, unit="KiB", description="weights in KiB")

    temporary_plugin(KiB(), name="kib")
    settings = SearchSettings(max_accuracy_drop=1.0, constraints=(("weight_kib", 200.0), ("latency", 5.0)))
    fake = FakeStudy(GROUPS, settings, baseline={**BASELINE_40, "weight_kib": 367.9, "latency": 7.25})
    fake.trial(
        {"accuracy": 39.5, "accuracy_drop": 0.5, "flops": 5e5, "params": 5e3, "weight_kib": 180.5, "latency": 4.5}
    )
    page = write_report(fake.study, tmp_path).read_text()
    assert (
        "<code>latency</code> &le; 5 ms, <code>weight_kib</code> &le; 200 KiB (the baseline: 7.25 ms, 367.9 KiB)"
        in page
    )
    assert "<tr><th>weight_kib (&lt;= 200 KiB)</th><td>367.9 KiB</td><td>180.5 KiB</td><td>-187.4 KiB</td></tr>" in page
    assert "<th>latency (&lt;= 5 ms)</th><td>7.25 ms</td><td>4.5 ms</td><td>1.61x faster</td>" in page


def test_an_interrupted_search_writes_every_file_a_finished_one_does(tmp_path, monkeypatch):
    """Regression (Ctrl-C left a report without rates.png and trials.csv): the report read the study's
    attributes from the storage five times per trial, so writing it after Ctrl-C took over a minute on a
    long study (73 s of 108 s for 1,000 trials on SQLite), long enough to be stopped again before those
    files were written; now it reads them once."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(storage, name="stopped")

    def interrupted(trial):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study.optimize(interrupted, n_trials=1)  # Optuna fails the running trial, as on Ctrl-C
    assert study.trials[-1].state == optuna.trial.TrialState.FAIL
    reads = []
    user_attrs = optuna.Study.user_attrs.fget

    def counted(self):
        reads.append(1)
        return user_attrs(self)

    monkeypatch.setattr(optuna.Study, "user_attrs", property(counted))
    stopped, finished = tmp_path / "stopped", tmp_path / "finished"
    write_report(optuna.load_study(study_name="stopped", storage=storage), stopped)
    assert len(reads) <= 3  # once per report, not once per trial (31 trials)
    write_report(_study(), finished)
    assert sorted(p.name for p in stopped.iterdir()) == sorted(p.name for p in finished.iterdir())
    assert len(pd.read_csv(stopped / "trials.csv")) == 31


def test_a_budget_finer_than_the_validation_split_is_warned_about_in_the_report(tmp_path):
    study = _study()
    assert "Warning:" not in write_report(study, tmp_path / "fine").read_text()
    StudyRecord(study).resolution_warning = "max_accuracy_drop = 1 point is 2.9 validation images of 288"
    page = write_report(study, tmp_path / "coarse").read_text()
    assert "<strong>Warning:</strong> max_accuracy_drop = 1 point is 2.9 validation images of 288." in page
