"""Exceptions raised by autoprune.

Every error a user can cause derives from :class:`AutopruneError`; the command
line prints its message on one line and exits with status 2. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class AutopruneError(Exception):
    """A problem with what the user asked for: bad input, unknown name, missing data."""


class UnknownNameError(AutopruneError, KeyError):
    """A name that is not registered (importance, model, dataset or group)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(AutopruneError):
    """Two plugins registered the same name for the same kind of object."""


class PluginError(AutopruneError):
    """A plugin broke its contract (for example an importance returned a bad score)."""


class PruningError(AutopruneError):
    """A pruning request that cannot be carried out on this model."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search's trials: the running trial is failed, ``result`` holds what finished."""

    def __init__(self, result) -> None:
        super().__init__("the search was interrupted")
        self.result = result


def unknown_name(kind: str, name: object, valid: Iterable[str], *, list_all: bool = False) -> UnknownNameError:
    """Build the error for an unknown ``name``, suggesting the closest valid ones.

    Without a close one, the valid names are listed when there are few (or
    ``list_all``); many registered plugins are pointed to ``autoprune plugins``.
    """
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif len(valid) <= 12 or list_all:
        hint = "valid: " + ", ".join(repr(v) for v in valid) if valid else "none are registered"
    else:
        hint = f"{len(valid)} are registered; list them with `autoprune plugins`"
    only = os.environ.get("AUTOPRUNE_PLUGINS")
    if only is not None and not close:  # the name may come from a plugin this variable leaves out
        hint += (
            f" (AUTOPRUNE_PLUGINS={only!r} loads only the entry points it names, built-in ones included: "
            "unset it, or add the plugin that registers it, such as metrics_builtin, tasks_builtin or "
            "datasets_builtin)"
        )
    return UnknownNameError(f"unknown {kind} {name!r}; {hint}")
