"""Name -> object registries filled by the plugin hooks.

One :class:`Registry` per kind of object (importance, model, dataset). Names are
unique within a kind; a duplicate names both plugins, an unknown name suggests
the closest registered ones.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import AutopruneError, DuplicateNameError, unknown_name

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")


@dataclass(frozen=True)
class Source:
    """Where a registered object came from: the plugin and its distribution."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution is None:
            return self.plugin
        version = f" {self.version}" if self.version else ""
        return f"{self.distribution}{version} ({self.plugin})"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its metadata."""

    kind: str
    name: str
    obj: T
    source: Source
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Registered objects of one kind, in registration order."""

    def __init__(
        self, kind: str, options: dict[str, type | tuple[Any, ...] | Callable[[Any], str]] | None = None
    ) -> None:
        """``options``: the keyword options ``register`` accepts, each a type, a tuple of valid values,
        or a function that says what is wrong with a value ("" when nothing)."""
        self.kind = kind
        self._options = dict(options or {})
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, obj: T, *, source: Source, description: str = "", **options: Any) -> Entry[T]:
        if not isinstance(name, str) or not _NAME.match(name):
            raise AutopruneError(
                f"{source.plugin} registered {self.kind} name {name!r}; a name is a non-empty "
                "string of letters, digits, '_', '.', '-' or '/' that starts with a letter or digit"
            )
        if not callable(obj):
            raise AutopruneError(
                f"{source.plugin} registered {self.kind} {name!r} as {type(obj).__name__}, which is not callable"
            )
        if not isinstance(description, str):
            raise AutopruneError(
                f"{source.plugin} gave {self.kind} {name!r} a description of type "
                f"{type(description).__name__}; it must be a string"
            )
        for key, value in options.items():
            expected = self._options.get(key)
            if expected is None:
                valid = ", ".join(["description", *self._options]) or "description"
                raise AutopruneError(
                    f"{source.plugin} registered {self.kind} {name!r} with unknown option "
                    f"{key!r}; valid keyword options: {valid}"
                )
            if isinstance(expected, tuple):  # one of these values
                if value not in expected:
                    raise AutopruneError(
                        f"{source.plugin} registered {self.kind} {name!r} with {key}={value!r}; "
                        f"valid: {', '.join(map(repr, expected))}"
                    )
            elif isinstance(expected, type):
                if not isinstance(value, expected):
                    raise AutopruneError(
                        f"{source.plugin} registered {self.kind} {name!r} with {key}={value!r}; "
                        f"it must be a {expected.__name__}"
                    )
            elif problem := expected(value):
                raise AutopruneError(f"{source.plugin} registered {self.kind} {name!r} with {key}={value!r}; {problem}")
        if name in self._entries:
            first = self._entries[name].source
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by {first} and by {source}; "
                "uninstall one of them or rename one"
            )
        entry = Entry(self.kind, name, obj, source, description.strip(), dict(options))
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._entries) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
