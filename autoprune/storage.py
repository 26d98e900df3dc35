"""Optuna storages as autoprune opens them: crash-safe, safe for several processes, clear errors.

Every storage a URL names gets Optuna's heartbeat (``heartbeat_interval``): a
running trial records a heartbeat every interval, and a trial whose worker was
killed stops beating. Once its last heartbeat is older than the grace period
(``GRACE_FACTOR`` intervals), the next worker to start a trial fails it
(``optuna.storages.fail_stale_trials``) and queues its parameters again
(:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`).

URLs:

- ``sqlite:///study.db`` (relative to the working directory) or
  ``sqlite:////abs/study.db``. Optuna claims a queued trial by reading it as
  WAITING and then marking it RUNNING with ``SELECT ... FOR UPDATE``, which SQLite
  ignores, so two processes could claim the same one; every SQLite transaction
  therefore begins with ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for serializable
  SQLite transactions) and waits up to a minute for the write lock.
- ``postgresql+psycopg://user:pass@host/db`` (the ``postgres`` extra installs
  psycopg 3; with SQLAlchemy 2.1 ``postgresql://`` means the same), ``mysql+pymysql://...``:
  any URL SQLAlchemy and Optuna's RDB storage take.
- ``journal:///study.log`` (relative) or ``journal:////abs/study.log``: Optuna's
  journal file storage, for a shared file system without a database server. Optuna
  gives journals no heartbeat, so autoprune records one as a trial system
  attribute; workers' clocks must agree to within the grace period.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from . import storage_adapters
from .errors import AutopruneError
from .interrupts import calls_held_back

#: Seconds a SQLite connection waits for another process's write lock.
SQLITE_LOCK_TIMEOUT = 60
#: Seconds between a running trial's heartbeats (the ``heartbeat_interval`` setting's default).
HEARTBEAT_INTERVAL = 10
#: A trial is stale once its last heartbeat is this many intervals old.
GRACE_FACTOR = 3
#: Times a stale trial's parameters are queued again.
MAX_RETRY = 2
JOURNAL = "journal:///"
URL_FORMS = (
    "sqlite:///PATH.db, postgresql+psycopg://USER:PASSWORD@HOST/DB, "
    "mysql+pymysql://USER:PASSWORD@HOST/DB, journal:///PATH.log"
)

_DRIVER_HINTS = {
    "postgresql": "pip install 'autoprune[postgres]' (psycopg 3) and give a postgresql+psycopg:// URL",
    "mysql": "pip install pymysql and give a mysql+pymysql:// URL",
}

_logger = logging.getLogger("autoprune")


def open_storage(
    storage: str | BaseStorage | None, heartbeat_interval: int = HEARTBEAT_INTERVAL
) -> BaseStorage | str | None:
    """The storage to give Optuna for ``storage`` (a URL, a storage object, or None for memory).

    A URL that names no storage, a missing driver and a server that cannot be reached
    are each an :class:`AutopruneError` of one line, raised here, before any work.
    """
    if not isinstance(storage, str) or storage == "sqlite:///:memory:":
        return storage
    path = storage_file(storage)
    if path is not None and not path.parent.is_dir():
        raise AutopruneError(f"the storage {storage!r} names {str(path)!r}, whose folder does not exist")
    grace = GRACE_FACTOR * heartbeat_interval
    with warnings.catch_warnings():  # Optuna's heartbeat has been "experimental" since v2.8
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        retry = _Recover(RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
        if storage.startswith(JOURNAL):
            return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval, grace, retry)
        return _rdb_storage(storage, heartbeat_interval, grace, retry)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's stale trials and queue their parameters again (Optuna's, without its warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def storage_failure(error: optuna.exceptions.StorageInternalError) -> AutopruneError:
    """A storage that failed during the search (Optuna's ``StorageInternalError``), said in one line with the
    database's own reason: ``database is locked`` is a SQLite write lock another process held for longer
    than :data:`SQLITE_LOCK_TIMEOUT`."""
    cause = error.__cause__
    reason = str(getattr(cause, "orig", None) or cause or error).strip().splitlines()[0]
    if "locked" in reason:
        reason += f" (another process held its write lock for over {SQLITE_LOCK_TIMEOUT} s)"
    return AutopruneError(
        f"the study's storage failed: {reason}; its finished trials are kept: run the command again to resume"
    )


def storage_file(storage: str | BaseStorage | None) -> Path | None:
    """The file of a SQLite or journal storage URL (None for other storages)."""
    if not isinstance(storage, str) or storage == "sqlite:///:memory:":
        return None
    for prefix in ("sqlite:///", JOURNAL):
        if storage.startswith(prefix):
            return Path(storage.removeprefix(prefix))
    return None


def folder_storage(out_dir: str | Path) -> str:
    """The URL of the database a search keeps in its output folder: ``sqlite:////abs/OUT_DIR/study.db``."""
    return f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"


def existing_storage(out_dir: str | Path | None, storage: str | None = None) -> str:
    """``storage`` when given, else the database of output folder ``out_dir``, which must exist."""
    if storage is not None:
        return storage
    if out_dir is None:
        raise AutopruneError("give the search's output folder or a storage URL")
    db = Path(out_dir) / "study.db"
    if not db.is_file():
        raise AutopruneError(f"{db} does not exist; give the storage URL of a study stored elsewhere (--storage)")
    return folder_storage(out_dir)


def shown_url(url: str) -> str:
    """``url`` as messages and commands show it: a database URL with its password hidden."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:  # not a database URL (a journal file): nothing to hide
        return url


def _rdb_storage(url: str, heartbeat_interval: int, grace: int, retry) -> optuna.storages.RDBStorage:
    import sqlalchemy
    from sqlalchemy import event

    try:
        sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise AutopruneError(f"storage {url!r} is not a storage URL; valid forms: {URL_FORMS}") from None
    shown = shown_url(url)
    sqlite = url.startswith("sqlite:")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}} if sqlite else None
    try:
        rdb = HeartbeatRDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=retry,
        )
    except ImportError:
        raise AutopruneError(
            f"storage {shown!r} needs a database driver that is not installed: "
            f"{_DRIVER_HINTS.get(url.split(':')[0].split('+')[0], 'install the driver the URL names')}"
        ) from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise AutopruneError(
            f"storage {shown!r} names a database SQLAlchemy does not know; valid forms: {URL_FORMS}"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise AutopruneError(f"cannot open the storage {shown!r}: {reason}") from None
    if sqlite:
        engine = rdb.engine

        @event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection, connection_record):  # pragma: no cover - driver hook
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection):  # pragma: no cover - driver hook
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        engine.dispose()  # connections made before the hooks would skip them
    return rdb


class _Recover:
    """Optuna's retry of a stale trial, told in one line."""

    def __init__(self, retry: Callable[[optuna.Study, FrozenTrial], None]) -> None:
        self.retry = retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial)
        _logger.warning(
            "trial %d was left running by a worker that stopped; failed it and queued its parameters again",
            trial.number,
        )


class TrialsRunHere:
    """A storage that knows the trials this process set running (created RUNNING or claimed from the queue)
    and has not finished, so that an interrupt can fail each of them (:func:`fail_trials_running_here`):
    Optuna fails the trial its objective was running, but not one that a Ctrl-C caught while Optuna was
    still creating it (its sampler drawing the first parameters) or recording its end."""

    def _run_here(self) -> set[int]:
        if "_trials_run_here" not in self.__dict__:
            self.__dict__["_trials_run_here"] = set()
            _STORAGES.add(self)
        return self.__dict__["_trials_run_here"]

    def trial_created(self, trial_id: int, state: TrialState) -> None:
        if state == TrialState.RUNNING:
            self._run_here().add(trial_id)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        self.trial_created(trial_id, TrialState.RUNNING if template_trial is None else template_trial.state)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:
            self._run_here().add(trial_id)
        elif state.is_finished():
            self._run_here().discard(trial_id)
        return changed

    def fail_trials_run_here(self) -> None:
        for trial_id in sorted(self._run_here()):
            try:
                if self.get_trial(trial_id).state == TrialState.RUNNING:
                    self.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it as stale meanwhile
                self._run_here().discard(trial_id)


_STORAGES: weakref.WeakSet[TrialsRunHere] = weakref.WeakSet()

#: The storage calls during which a Ctrl-C waits (:mod:`autoprune.interrupts`): all of Optuna's storage API
#: and the heartbeat's.
HELD_BACK = (
    *(n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))),
    "record_heartbeat",
    "stale_trial_ids",
    "fail_trials_run_here",
)


def fail_trials_running_here() -> None:
    """Fail every trial this process set running and left RUNNING (an interrupt ended its search), in every
    storage it opened; a storage that cannot be reached any more is left to the heartbeat, which fails
    such trials once they are stale."""
    for storage in list(_STORAGES):
        with contextlib.suppress(Exception):
            storage.fail_trials_run_here()


@calls_held_back((*HELD_BACK, *storage_adapters.RDB_PRIVATE_CALLS))
class HeartbeatRDBStorage(
    TrialsRunHere,
    storage_adapters.RDBTrialCreation,
    storage_adapters.StaleTrialsHeartbeat,
    optuna.storages.RDBStorage,
):
    """Optuna's RDB storage, where a trial killed before its first heartbeat also goes stale.

    Optuna counts a trial as stale only by its last heartbeat, so a worker killed
    between claiming a trial and its first heartbeat would leave it RUNNING for
    ever; such a trial counts from its start instead.
    """

    def stale_trial_ids(self, study_id: int) -> list[int]:
        stale = storage_adapters.rdb_stale_trial_ids(self, study_id)
        now = datetime.datetime.now()
        overdue = [
            self.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if trial.datetime_start is not None and (now - trial.datetime_start).total_seconds() > self.grace_period
        ]
        overdue = [trial_id for trial_id in overdue if trial_id not in stale]
        beating = storage_adapters.rdb_trial_ids_with_heartbeat(self, overdue)
        return stale + [trial_id for trial_id in overdue if trial_id not in beating]


@calls_held_back(HELD_BACK)
class HeartbeatJournalStorage(TrialsRunHere, JournalStorage, storage_adapters.StaleTrialsHeartbeat):
    """Optuna's journal storage with the heartbeat its RDB storage has.

    A running trial's heartbeat is the wall-clock time in its system attribute
    ``autoprune:heartbeat``, or its start when that is later.
    """

    ATTR = "autoprune:heartbeat"

    def __init__(
        self,
        backend,
        heartbeat_interval: int,
        grace_period: int,
        stale_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period, self.stale_callback = (
            heartbeat_interval,
            grace_period,
            stale_callback,
        )

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, self.ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:  # finished (or failed as stale) meanwhile
            pass

    def stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beats = [trial.system_attrs.get(self.ATTR)]  # a retried trial inherits its original's
            if trial.datetime_start is not None:
                beats.append(trial.datetime_start.timestamp())
            beat = max((b for b in beats if b is not None), default=None)
            if beat is not None and now - beat > self.grace_period:
                stale.append(self.get_trial_id_from_study_id_trial_number(study_id, trial.number))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_callback
