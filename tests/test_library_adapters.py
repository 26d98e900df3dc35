"""The adapters over Optuna's private names, against the installed Optuna; and the version bounds CI installs.

A release that renames or changes what an adapter relies on fails here, by name,
before any study does.
"""

from __future__ import annotations

import time
import tomllib
from importlib.metadata import version
from pathlib import Path

import optuna
import pytest
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.trial import TrialState
from packaging.requirements import Requirement

from autoprune import storage_adapters
from autoprune.storage import fail_stale_trials

ROOT = Path(__file__).resolve().parent.parent


def test_optunas_heartbeat_protocol_is_the_one_the_adapter_implements():
    assert BaseHeartbeat.__abstractmethods__ == {
        "record_heartbeat",
        "_get_stale_trial_ids",
        "get_heartbeat_interval",
        "get_heartbeat_stale_trial_callback",
    }


class _Beating(storage_adapters.StaleTrialsHeartbeat, optuna.storages.InMemoryStorage):
    """Every running trial is stale."""

    def record_heartbeat(self, trial_id: int) -> None:
        pass

    def stale_trial_ids(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [self.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in running]

    def get_heartbeat_interval(self) -> int | None:
        return 1

    def get_heartbeat_stale_trial_callback(self):
        return None


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_optunas_fail_stale_trials_asks_the_adapters_stale_trial_ids():
    study = optuna.create_study(storage=_Beating())
    trial = study.ask()
    fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.FAIL


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_rdb_adapters_read_optunas_heartbeats(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=1)
    study_id = storage.create_new_study([StudyDirection.MINIMIZE])
    beating, silent = storage.create_new_trial(study_id), storage.create_new_trial(study_id)
    storage.record_heartbeat(beating)
    assert storage_adapters.rdb_trial_ids_with_heartbeat(storage, [beating, silent]) == {beating}
    assert storage_adapters.rdb_trial_ids_with_heartbeat(storage, []) == set()
    assert storage_adapters.rdb_stale_trial_ids(storage, study_id) == []
    time.sleep(2.5)  # SQLite's clock counts whole seconds
    # Optuna counts a trial by its last heartbeat only, so the one that never beat is not stale:
    # HeartbeatRDBStorage exists for that trial.
    assert storage_adapters.rdb_stale_trial_ids(storage, study_id) == [beating]


@pytest.mark.parametrize("name", ["optuna", "torch-pruning"])
def test_the_installed_version_is_within_pyprojects_bounds(name):
    """CI installs from pyproject.toml, so these bounds are the versions the adapters are tested with."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [r for r in map(Requirement, dependencies) if r.name == name]
    assert any(spec.operator == "<" for spec in requirement.specifier), f"{name} needs an upper bound"
    assert requirement.specifier.contains(version(name)), f"{name} {version(name)} is outside {requirement}"
