"""Nothing lost: kills, Ctrl-C and crashes mid-write, on every storage autoprune documents.

The searches run as separate processes (`python -m autoprune search`), killed with
SIGKILL while a trial is running, and run again. A plugin model that sleeps in
every evaluation forward pass keeps each trial running long enough to be caught.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoprune import cli
from autoprune.files import atomic_write, atomic_write_text
from autoprune.storage import folder_storage, open_storage

SLOW_PLUGIN = textwrap.dedent('''
    import time
    from torch import nn
    import autoprune

    class SlowCNN(nn.Module):
        """Two convolutions; every forward pass in eval mode sleeps ``delay`` seconds."""

        def __init__(self, num_classes: int, in_channels: int, delay: float = 0.0):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(8, num_classes)
            self.delay = delay

        def forward(self, x):
            if not self.training and self.delay:
                time.sleep(self.delay)
            return self.head(self.features(x))

    @autoprune.hookimpl
    def autoprune_register_models(register):
        register("slow_cnn", SlowCNN)
''')


@pytest.fixture
def slow_study(tmp_path, study_file):
    """A study file on the sleeping model, and the command that searches it."""
    (tmp_path / "slow_plugin.py").write_text(SLOW_PLUGIN)

    def make(storage: str, trials: int, delay: float = 0.1, out: str = "out"):
        name = f"kill-{uuid.uuid4().hex[:8]}"
        study = study_file(
            f"{name}.toml",
            study={"name": name, "max_accuracy_drop": 50.0, "trials": trials},
            model={"name": "slow_cnn", "params": {"delay": delay}},
            train={"epochs": 1},
            search={
                "heartbeat_interval": 1,
                "warm_start": "uniform",
                "uniform_starts": [0.1],
                "early_stop": "off",
                "calibration_batches": 1,
            },
        )
        command = [
            sys.executable,
            "-m",
            "autoprune",
            "--plugin",
            "slow_plugin",
            "search",
            str(study),
            "--storage",
            storage,
            "--out",
            str(tmp_path / out),
            "--quiet",
        ]
        return name, command

    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return make, env


def _states(storage, name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=storage)
    counts: dict[str, int] = {}
    for trial in study.trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        if trial.state == TrialState.RUNNING and trial.params:  # past sampling: it has parameters to queue again
            counts["RUNNING_SAMPLED"] = counts.get("RUNNING_SAMPLED", 0) + 1
    return counts


def _kill_while_running(
    process: subprocess.Popen, storage: str, name: str, completed: int, timeout: float = 300
) -> None:
    """SIGKILL ``process`` once the study has ``completed`` trials and one running with its parameters drawn."""
    ends, opened = time.monotonic() + timeout, open_storage(storage)  # one connection pool for the polling
    while time.monotonic() < ends:
        assert process.poll() is None, process.communicate()[1]
        try:
            states = _states(opened, name)
        except KeyError:  # the study is not created yet
            states = {}
        if states.get("COMPLETE", 0) >= completed and states.get("RUNNING_SAMPLED", 0):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.05)
    raise AssertionError("the search never had a running trial to kill")


def _check_complete(storage: str, name: str, trials: int) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == trials
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    params = [tuple(sorted(t.params.items())) for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(params) == len(set(params))  # no plan scored twice: no queued trial ran twice, no worker repeated one
    return study


def _storage_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return folder_storage(tmp_path)
    if backend == "journal":
        return f"journal:///{tmp_path / 'study.log'}"
    url = os.environ.get("AUTOPRUNE_TEST_POSTGRES")
    if not url:
        pytest.skip("AUTOPRUNE_TEST_POSTGRES is set by `make test`, which starts PostgreSQL")
    return url


@pytest.mark.parametrize("backend", ["sqlite", "journal"])
def test_a_killed_search_run_again_ends_with_exactly_its_trials_and_none_running(backend, tmp_path, slow_study):
    make, env = slow_study
    storage = _storage_url(backend, tmp_path)
    name, command = make(storage, trials=8)
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_while_running(first, storage, name, completed=3)
    assert _states(open_storage(storage), name).get("RUNNING") == 1  # the killed worker's trial
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert "left running by a worker that stopped; failed it and queued its parameters again" in again.stderr
    assert "training the baseline" not in again.stderr  # the cache was written before the kill
    study = _check_complete(storage, name, trials=8)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(failed) == 1 and len(retried) == 1
    assert failed[0].params.items() <= retried[0].params.items()  # what was drawn before the kill, drawn again


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_two_workers_each_killed_once_and_restarted_share_exactly_the_budget(backend, tmp_path, slow_study):
    make, env = slow_study
    storage = _storage_url(backend, tmp_path)
    name, command = make(storage, trials=12)
    try:
        subprocess.run(
            [*command[:-1], "--trials", "1", "--quiet"], env=env, check=True, capture_output=True, timeout=600
        )  # trains the baseline and creates the study
        workers = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for number, completed in ((0, 3), (1, 6)):
            _kill_while_running(workers[number], storage, name, completed=completed)
            workers[number] = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        for worker in workers:
            _, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err
        _check_complete(storage, name, trials=12)
    finally:
        if backend == "postgres":
            optuna.delete_study(study_name=name, storage=storage)


def test_ctrl_c_fails_the_running_trial_and_still_writes_the_results(tmp_path, study_file, capsys, monkeypatch):
    from autoprune.plan import PlanSpace

    suggest = PlanSpace.suggest

    def interrupted_at_trial_3(space, trial, *args, **kwargs):
        if trial.number == 3:
            raise KeyboardInterrupt
        return suggest(space, trial, *args, **kwargs)

    monkeypatch.setattr(PlanSpace, "suggest", interrupted_at_trial_3)
    from autoprune import workflow

    write_outputs, held = workflow.write_outputs, []

    def writing(*args, **kwargs):
        held.append(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
        return write_outputs(*args, **kwargs)

    monkeypatch.setattr(workflow, "write_outputs", writing)
    out = tmp_path / "out"
    quick = study_file(
        "quick.toml",
        study={"max_accuracy_drop": 5.0},
        train={"epochs": 1},
        search={"warm_start": "uniform", "calibration_batches": 2},
    )
    args = ["search", str(quick), "--trials", "10", "--out", str(out), "--quiet"]
    assert cli.main(args) == 130
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith(("training the baseline", "  epoch"))]
    assert len(lines) == 2 and lines[0].startswith("writing the report and model of the finished trials")
    assert lines[1].startswith("autoprune: interrupted;") and "the 3 finished trials are saved" in lines[1]
    assert held == [True] and signal.getsignal(signal.SIGINT) != signal.SIG_IGN  # a second Ctrl-C waited
    assert "3 trials" in captured.out
    for name in ("best.pt", "best_plan.json", "report/index.html", "report/trials.csv"):
        assert (out / name).is_file()
    study = optuna.load_study(study_name="quick", storage=folder_storage(out))
    finished = [t.state.name for t in study.trials if t.state != TrialState.WAITING]  # queued warm starts wait
    assert finished == ["COMPLETE"] * 3 + ["FAIL"]
    monkeypatch.setattr(PlanSpace, "suggest", suggest)
    assert cli.main([*args[:3], "4", *args[4:]]) == 0  # the same command resumes
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4


@pytest.mark.baseline("brief")
def test_ctrl_c_while_optuna_records_a_trial_is_an_interrupt_not_a_traceback(search_baseline, monkeypatch):
    """Optuna's ``_run_trial`` turns a KeyboardInterrupt inside its post-processing into an UnboundLocalError;
    the search still ends as interrupted. The Ctrl-C is placed there by patching the step it interrupts."""
    from optuna.study import _optimize

    from autoprune import SearchInterrupted

    tell, calls = _optimize._tell_with_warning, []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return tell(*args, **kwargs)

    monkeypatch.setattr(_optimize, "_tell_with_warning", interrupted_once)
    with pytest.raises(SearchInterrupted) as stopped:
        search_baseline(max_accuracy_drop=5.0, trials=4, uniform_starts=(), calibration_batches=1)
    assert isinstance(stopped.value.__cause__, KeyboardInterrupt)
    assert len(stopped.value.result.record.completed()) == 1


def test_a_write_stopped_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "best_plan.json"
    atomic_write_text(target, "old")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["best_plan.json"]


def test_a_process_killed_while_writing_leaves_the_old_file(tmp_path):
    target = tmp_path / "best.pt"
    atomic_write_text(target, "old")
    script = textwrap.dedent(f"""
        import time
        from autoprune.files import atomic_write

        def slow(tmp):
            with open(tmp, "w") as f:
                f.write("new, half written")
                f.flush()
                print("writing", flush=True)
                time.sleep(60)

        atomic_write({str(target)!r}, slow)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert target.read_text() == "old"


def test_an_interrupt_that_left_the_last_started_trial_running_fails_it():
    from autoprune.results import StudyRecord
    from autoprune.searcher.optimize import _fail_if_running

    study = optuna.create_study()
    finished, running = study.ask(), study.ask()
    study.tell(finished, 1.0)

    def objective(trial):
        return 0.0

    for trial in (finished, running):
        objective.current = trial
        _fail_if_running(StudyRecord(study), objective)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]


@pytest.mark.baseline("brief")
def test_a_storage_that_fails_while_optuna_records_a_trial_is_one_line_not_a_traceback(search_baseline, monkeypatch):
    """A SQLite lock held past its timeout fails Optuna's tell; Optuna's cleanup then hides the error in an
    UnboundLocalError. The search ends with the database's own reason instead."""
    import sqlalchemy
    from optuna.study import _optimize

    from autoprune.errors import AutopruneError

    tell, calls = _optimize._tell_with_warning, []

    def locked_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            locked = sqlalchemy.exc.OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from locked
        return tell(*args, **kwargs)

    monkeypatch.setattr(_optimize, "_tell_with_warning", locked_once)
    with pytest.raises(AutopruneError, match="^the study's storage failed: database is locked \\(another process"):
        search_baseline(max_accuracy_drop=5.0, trials=4, uniform_starts=(), calibration_batches=1)
