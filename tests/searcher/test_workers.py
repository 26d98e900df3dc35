"""Several workers on one study: each process runs `autoprune search` on a shared storage."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import optuna
import pytest


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_workers_share_one_study(backend, tmp_path, storage, study_file):
    if backend == "postgres":
        storage = os.environ.get("AUTOPRUNE_TEST_POSTGRES")
        if not storage:
            pytest.skip("AUTOPRUNE_TEST_POSTGRES is set by `make test`, which starts PostgreSQL")
    name = f"workers-{uuid.uuid4().hex[:8]}"
    trials = 10
    path = study_file(
        study={"name": name, "max_accuracy_drop": 5.0, "trials": trials},
        model={"params": {"width": 8}},
        train={"epochs": 2},
        search={"importances": ["l1", "fpgm"], "calibration_batches": 3, "uniform_starts": [0.0]},
    )
    command = [
        sys.executable,
        "-m",
        "autoprune",
        "search",
        str(path),
        "--storage",
        storage,
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    # the first run trains and caches the baseline and creates the study; then two workers share it
    subprocess.run([*command[:-1], "--trials", "1", "--quiet"], check=True, capture_output=True)
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
        assert "training the baseline" not in err
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(done) == trials  # a trial running elsewhere counts towards the budget
        assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        assert len({t.number for t in done}) == len(done)
        assert study.user_attrs["baseline_accuracy"] > 0
    finally:
        if backend == "postgres":
            optuna.delete_study(study_name=name, storage=storage)
