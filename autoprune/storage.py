"""Optuna storages as autoprune opens them: SQLite made safe for several processes.

Optuna's RDB storage claims a queued (enqueued) trial by reading it as WAITING and
then marking it RUNNING, with ``SELECT ... FOR UPDATE``, which SQLite ignores: two
worker processes can both claim the same queued trial, and the second then fails
with "Cannot tell a COMPLETE trial". For SQLite URLs every transaction therefore
begins with ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for serializable SQLite
transactions), which takes the database's write lock up front, and waits up to a
minute for it. Other URLs go to Optuna unchanged.
"""

from __future__ import annotations

import optuna
from sqlalchemy import event

#: Seconds a SQLite connection waits for another process's write lock.
SQLITE_LOCK_TIMEOUT = 60


def open_storage(storage: str | optuna.storages.BaseStorage | None) -> optuna.storages.BaseStorage | str | None:
    """The storage to give Optuna for ``storage`` (a URL, a storage object, or None for memory)."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:") or storage == "sqlite:///:memory:":
        return storage
    rdb = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}})
    engine = rdb.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, connection_record):  # pragma: no cover - driver hook
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):  # pragma: no cover - driver hook
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks would skip them
    return rdb
