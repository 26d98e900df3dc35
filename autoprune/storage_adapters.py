"""Optuna's private names that autoprune's storages need, each behind one adapter.

Optuna has no public API for these. tests/test_library_adapters.py exercises
each against the installed Optuna, so a release that changes one fails there,
and pyproject.toml bounds Optuna to the major version they are tested with.
Every other module uses Optuna's public API only.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

import optuna
from optuna.storages._heartbeat import BaseHeartbeat


class StaleTrialsHeartbeat(BaseHeartbeat):
    """Optuna's heartbeat protocol, with its stale-trial query under a public name.

    ``optuna.storages.fail_stale_trials`` acts only on a storage that is an
    ``optuna.storages._heartbeat.BaseHeartbeat`` (Optuna exports no heartbeat base
    class) and asks it for stale trials through its private ``_get_stale_trial_ids``,
    which this class forwards to :meth:`stale_trial_ids`. List it before an Optuna
    storage class that has its own (``RDBStorage``).
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    @abc.abstractmethod
    def stale_trial_ids(self, study_id: int) -> list[int]:
        """The ids of the study's running trials whose worker is presumed dead."""


def rdb_stale_trial_ids(storage: optuna.storages.RDBStorage, study_id: int) -> list[int]:
    """Optuna's own stale trials of an RDB storage: running, with a last heartbeat older than the grace period.

    Calls ``RDBStorage._get_stale_trial_ids``, which has no public counterpart.
    """
    return optuna.storages.RDBStorage._get_stale_trial_ids(storage, study_id)


def rdb_trial_ids_with_heartbeat(storage: optuna.storages.RDBStorage, trial_ids: Iterable[int]) -> set[int]:
    """Those of ``trial_ids`` that have recorded a heartbeat in an RDB storage.

    Reads Optuna's heartbeat table through its ORM model
    ``optuna.storages._rdb.models.TrialHeartbeatModel``; the storage API has no
    query for it.
    """
    import sqlalchemy
    from optuna.storages._rdb.models import TrialHeartbeatModel

    trial_ids = list(trial_ids)
    if not trial_ids:
        return set()
    query = sqlalchemy.select(TrialHeartbeatModel.trial_id).where(TrialHeartbeatModel.trial_id.in_(trial_ids))
    with storage.engine.connect() as connection:
        return set(connection.execute(query).scalars())


#: The private methods of ``RDBStorage`` that Optuna's ``_CachedStorage`` (the wrapper Optuna puts around
#: every RDB storage a study opens) calls in place of public ones: storage calls as much as its public API.
RDB_PRIVATE_CALLS = (
    "_create_new_trial",
    "_get_trials",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
)


class RDBTrialCreation:
    """Optuna's RDB storage telling :meth:`trial_created` of each trial it creates.

    Optuna's cached storage creates trials through the private
    ``RDBStorage._create_new_trial`` (which returns the new trial), never through the
    public ``create_new_trial``. List it before ``RDBStorage``.
    """

    def _create_new_trial(self, study_id: int, template_trial=None):
        trial = super()._create_new_trial(study_id, template_trial)
        self.trial_created(trial._trial_id, trial.state)
        return trial

    @abc.abstractmethod
    def trial_created(self, trial_id: int, state) -> None:
        """Told of each trial this storage object created, with the state it was created in."""
