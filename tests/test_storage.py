"""SQLite studies shared by several processes: a queued trial is claimed by one worker only."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import optuna
import pytest

WORKER = textwrap.dedent("""
    import sys, time, optuna
    from autoprune.storage import open_storage
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="queue", storage=open_storage(sys.argv[1]))
    for _ in range(30):
        study.optimize(lambda t: (time.sleep(0.005), t.suggest_float("x", 0, 1))[1], n_trials=1)
""")


def test_workers_never_claim_the_same_queued_trial(tmp_path):
    """Regression: two workers resuming a study with queued warm starts both ran one of them,
    and the second failed with "Cannot tell a COMPLETE trial" (SQLite ignores SELECT FOR UPDATE)."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(study_name="queue", storage=url)
    for i in range(60):
        study.enqueue_trial({"x": i / 100})
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, url], stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    trials = optuna.load_study(study_name="queue", storage=url).trials
    assert len(trials) == 90 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.params["x"] for t in trials[:60]) == [i / 100 for i in range(60)]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_whose_worker_died_before_its_first_heartbeat_goes_stale_too(kind, tmp_path):
    import time

    from optuna.trial import TrialState

    from autoprune.storage import fail_stale_trials, open_storage

    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:///{tmp_path / 's.log'}"
    study = optuna.create_study(storage=open_storage(url, heartbeat_interval=1), study_name="s")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # claimed, then the worker died
    time.sleep(1.0)
    fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.RUNNING  # within the grace period: maybe alive
    time.sleep(2.5)
    fail_stale_trials(study)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # failed, and its parameters queued again
    assert study.trials[1].params == study.trials[0].params
