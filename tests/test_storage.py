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


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_ctrl_c_inside_a_transaction_is_raised_after_it_and_leaves_the_database_unlocked(tmp_path):
    """A Ctrl-C raised inside SQLAlchemy would leave the transaction open, the write lock taken for every
    other worker; the storage raises it once the call has ended."""
    import signal
    import sqlite3

    from sqlalchemy import event

    from autoprune.storage import open_storage

    path = tmp_path / "s.db"
    storage = open_storage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    interrupted = []

    def interrupt(connection, cursor, statement, *args):
        if statement.startswith(("INSERT", "UPDATE")) and not interrupted:
            interrupted.append(statement)
            signal.raise_signal(signal.SIGINT)  # as a Ctrl-C arriving in the middle of the transaction

    before = signal.getsignal(signal.SIGINT)
    event.listen(storage.engine, "before_cursor_execute", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            trial.set_user_attr("a", 1)
    finally:
        event.remove(storage.engine, "before_cursor_execute", interrupt)
        signal.signal(signal.SIGINT, before)
    assert interrupted and study.trials[0].user_attrs == {"a": 1}  # the call ran to its end
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock is free at once
    other.execute("ROLLBACK")
    other.close()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_an_interrupt_fails_the_trials_this_process_set_running_and_only_those(tmp_path):
    from optuna.trial import TrialState

    from autoprune.storage import fail_trials_running_here, open_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    elsewhere = "import optuna, sys; optuna.load_study(study_name='s', storage=sys.argv[1]).ask()"
    subprocess.run([sys.executable, "-c", elsewhere, url], check=True)  # a worker's trial, RUNNING
    finished = study.ask()
    study.tell(finished, 1.0)
    study.enqueue_trial({"x": 0.5})
    claimed, created = study.ask(), study.ask()  # the queued trial claimed, then a new one
    fail_trials_running_here()
    states = {t.number: t.state for t in optuna.load_study(study_name="s", storage=url).trials}
    assert (finished.number, claimed.number, created.number) == (1, 2, 3)
    assert states == {0: TrialState.RUNNING, 1: TrialState.COMPLETE, 2: TrialState.FAIL, 3: TrialState.FAIL}
