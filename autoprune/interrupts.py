"""Ctrl-C held back while a storage call runs, so that an interrupt never lands inside a database transaction.

A ``KeyboardInterrupt`` raised inside SQLAlchemy while a transaction is open leaves
the connection referenced by the exception's traceback with its transaction still
open: SQLAlchemy treats the interrupt as an exit and drops the connection without
closing it. Every SQLite transaction of a study takes the write lock
(:mod:`autoprune.storage`), so the other workers, and this process's own next
connection (the one that would fail its running trial), then wait for a lock that
nothing releases until the traceback is collected. A PostgreSQL server likewise keeps
the locks of a connection that stays open.

So in the main thread (the only one Python interrupts), a Ctrl-C that arrives while a
storage method runs is held until the outermost such call returns, and raised there,
outside any transaction. Outside storage calls a Ctrl-C is raised at once, as Python's
own handler does. A program that installed its own SIGINT handler keeps it: only
Python's default handler is replaced.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

_Class = TypeVar("_Class", bound=type)


class _Held:
    depth = 0  # storage calls of the main thread in progress (a storage method calling another counts twice)
    pending = False  # a Ctrl-C came during one of them


def _on_interrupt(signum: int, frame: Any) -> None:
    if _Held.depth:
        _Held.pending = True
    else:
        _Held.pending = False  # one Ctrl-C, raised once
        signal.default_int_handler(signum, frame)


def _enter() -> bool:
    """Start holding interrupts back, if this is the main thread; whether it is."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)
    _Held.depth += 1
    return True


def _leave() -> None:
    _Held.depth -= 1
    if _Held.depth == 0 and _Held.pending:
        _Held.pending = False
        raise KeyboardInterrupt


def held_back(method: Callable) -> Callable:
    """``method``, with a Ctrl-C that arrives while it runs raised once it has returned."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        main = _enter()
        try:
            return method(*args, **kwargs)
        finally:
            if main:
                _leave()

    return call


def calls_held_back(names: Iterable[str]) -> Callable[[_Class], _Class]:
    """A class decorator: each method of ``names`` (as the class resolves it) wrapped in :func:`held_back`."""

    def decorate(cls: _Class) -> _Class:
        for name in names:
            setattr(cls, name, held_back(getattr(cls, name)))
        return cls

    return decorate
