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


def test_every_call_optunas_cached_storage_makes_on_its_rdb_backend_is_held_back_from_interrupts():
    """Optuna wraps an RDB storage in ``_CachedStorage``, which calls some of its backend's private methods:
    each must be one the storage holds Ctrl-C back from, or an interrupt could land inside a transaction."""
    import inspect
    import re

    from optuna.storages._cached_storage import _CachedStorage

    from autoprune.storage import HELD_BACK, HeartbeatRDBStorage

    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_CachedStorage)))
    trivial = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}  # no database
    assert called - trivial <= {*HELD_BACK, *storage_adapters.RDB_PRIVATE_CALLS}
    for name in storage_adapters.RDB_PRIVATE_CALLS:
        assert callable(getattr(optuna.storages.RDBStorage, name)), name
        assert getattr(HeartbeatRDBStorage, name).__wrapped__ is not None  # held back


def test_optunas_cached_storage_creates_trials_through_the_adapter(tmp_path):
    created = []

    class Telling(storage_adapters.RDBTrialCreation, optuna.storages.RDBStorage):
        def trial_created(self, trial_id, state):
            created.append((trial_id, state))

    study = optuna.create_study(storage=Telling(f"sqlite:///{tmp_path / 's.db'}"))
    study.enqueue_trial({"x": 1.0})
    trial = study.ask()
    assert created == [(trial._trial_id, TrialState.WAITING)]  # the queued one, claimed by a state change
    study.tell(trial, 1.0)
    other = study.ask()
    assert created[-1] == (other._trial_id, TrialState.RUNNING)


@pytest.mark.parametrize("name", ["optuna", "torch-pruning"])
def test_the_installed_version_is_within_pyprojects_bounds(name):
    """CI installs from pyproject.toml, so these bounds are the versions the adapters are tested with."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [r for r in map(Requirement, dependencies) if r.name == name]
    assert any(spec.operator == "<" for spec in requirement.specifier), f"{name} needs an upper bound"
    assert requirement.specifier.contains(version(name)), f"{name} {version(name)} is outside {requirement}"
