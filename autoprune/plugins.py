"""The plugin manager: built-in and third-party plugins through one path.

Plugins are modules (or objects) with :data:`autoprune.hookimpl` functions.
They are found through the ``autoprune`` entry-point group, which is also how
autoprune's own built-in plugins (the ``autoprune_plugins`` package) are
declared, so ``autoprune plugins`` lists both side by side. Tests and the
``--plugin`` option can add a plugin module directly with :func:`register`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import AutopruneError
from .registry import Entry, Registry, Source

ENTRY_POINT_GROUP = "autoprune"

#: Set to a comma-separated list of entry-point names to load only those
#: (for debugging a broken plugin); unset loads every installed plugin.
PLUGINS_ENV = "AUTOPRUNE_PLUGINS"

_manager: pluggy.PluginManager | None = None
_registries: Registries | None = None


def _metric_options_problem(value: Any) -> str:
    from .settings import options_problem  # deferred: the settings check names against the registries

    return options_problem(value)


@dataclass(frozen=True)
class Kind:
    """A kind of plugin object: its name, the hook that registers it, the name ``register`` gives the object
    as a keyword (``fn``, ``factory``), and the keyword options it accepts (a type, valid values, or a check)."""

    name: str
    hook: str
    obj_arg: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def plural(self) -> str:
        return self.name + "s"


#: Every kind of plugin object, declared once: the registries, ``autoprune plugins --kind`` and
#: :func:`autoprune.testing.registered` are built from it.
KINDS = (
    Kind("importance", "autoprune_register_importances", "fn", {"needs_grads": bool}),
    Kind("model", "autoprune_register_models", "factory", {"task": str}),
    Kind("dataset", "autoprune_register_datasets", "factory"),
    Kind("weight_importance", "autoprune_register_weight_importances", "fn", {"needs_grads": bool}),
    Kind(
        "metric",
        "autoprune_register_metrics",
        "fn",
        {"direction": ("minimize", "maximize"), "unit": str, "options": _metric_options_problem},
    ),
    Kind("task", "autoprune_register_tasks", "factory"),
)
KIND_NAMES = tuple(kind.name for kind in KINDS)


@dataclass(frozen=True)
class Registries:
    """One :class:`Registry` per :data:`KINDS` entry, named by its plural (``registries.importances``)."""

    importances: Registry[Callable[..., Any]]
    models: Registry[Callable[..., Any]]
    datasets: Registry[Callable[..., Any]]
    weight_importances: Registry[Callable[..., Any]]
    metrics: Registry[Callable[..., Any]]
    tasks: Registry[Callable[..., Any]]

    def __iter__(self):
        return (getattr(self, kind.plural) for kind in KINDS)

    def of(self, kind: str) -> Registry[Callable[..., Any]]:
        """The registry of ``kind`` (``"importance"``, ``"model"``, ...)."""
        declared = next((k for k in KINDS if k.name == kind), None)
        if declared is None:
            raise AutopruneError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KIND_NAMES)}")
        return getattr(self, declared.plural)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every installed plugin loaded."""
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        only = os.environ.get(PLUGINS_ENV)
        _load_entry_points(pm, None if only is None else [n.strip() for n in only.split(",") if n.strip()])
        _manager = pm
    return _manager


@dataclass(frozen=True)
class BrokenPlugin:
    """An installed plugin left out because it cannot be loaded: its entry point, package and error."""

    name: str
    package: str
    error: str


#: The installed plugins that could not be loaded (the others work without them).
broken_plugins: list[BrokenPlugin] = []
#: Each entry-point plugin's distribution: ``{entry point: (package, version)}``.
_distributions: dict[str, tuple[str, str]] = {}


def _load_entry_points(pm: pluggy.PluginManager, only: list[str] | None) -> None:
    """Register every plugin of the ``autoprune`` entry-point group (or those ``only`` names).

    One that cannot be imported, or that implements a hook autoprune does not have,
    is left out with one line on stderr naming it and how to leave it out for good,
    and the others keep working (``autoprune plugins`` lists it as broken).
    """
    found: dict[str, tuple[importlib.metadata.EntryPoint, Any]] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and ep.name not in found:
                found[ep.name] = (ep, dist)
    if only is not None:
        unknown = [name for name in only if name not in found]
        if unknown:
            raise AutopruneError(
                f"{PLUGINS_ENV} names {', '.join(map(repr, unknown))}, which no installed package declares; "
                f"installed plugins: {', '.join(sorted(found))}"
            )
    broken_plugins.clear()
    for name, (ep, dist) in found.items():
        if only is not None and name not in only:
            continue
        package = dist.metadata["Name"]
        try:
            plugin = ep.load()
            pm.register(plugin, name=name)
            try:
                check_hook_names(pm, plugin)
            except AutopruneError:
                pm.unregister(plugin)
                raise
        except Exception as exc:  # noqa: BLE001 - a plugin's own error, reported in one line
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            broken_plugins.append(BrokenPlugin(name, package, message))
            others = ",".join(n for n in found if n != name and (only is None or n in only))
            print(
                f"autoprune: warning: plugin {name!r} (package {package}) cannot be loaded and is left out: "
                f"{message}; to leave it out without this warning, set {PLUGINS_ENV}={others} "
                f"(or uninstall {package})",
                file=sys.stderr,
            )
            continue
        _distributions[name] = (package, dist.version)


def check_hook_names(pm: pluggy.PluginManager, plugin: object) -> None:
    """Refuse a plugin that implements a hook autoprune does not have (a misspelled name would be ignored).

    The same check as pluggy's ``check_pending``, with the plugin and the closest hook named.
    """
    for hook in pm.get_hookcallers(plugin) or []:
        if hook.has_spec():
            continue
        hooks = sorted(name for name, fn in vars(hookspecs).items() if name.startswith("autoprune_") and callable(fn))
        close = difflib.get_close_matches(hook.name, hooks, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "autoprune's hooks: " + ", ".join(hooks)
        raise AutopruneError(
            f"plugin {pm.get_name(plugin)!r} implements {hook.name!r}, which is not a hook of autoprune; {hint}"
        )


def register(plugin: ModuleType | object, name: str | None = None) -> str:
    """Add a plugin (a module or object with hook implementations); return its name."""
    pm = get_plugin_manager()
    try:
        registered = pm.register(plugin, name=name)
    except ValueError as exc:  # pluggy: the plugin or its name is registered already
        raise AutopruneError(f"cannot register plugin {name or plugin!r}: {exc}") from None
    if registered is None:
        raise AutopruneError(f"plugin {name or plugin!r} is blocked")
    try:
        check_hook_names(pm, plugin)
    except AutopruneError:
        pm.unregister(plugin)
        raise
    _invalidate()
    return registered


def unregister(plugin: ModuleType | object | None = None, name: str | None = None) -> None:
    """Remove a plugin added with :func:`register` (or an entry-point plugin)."""
    get_plugin_manager().unregister(plugin, name=name)
    _invalidate()


def load_plugin_module(path: str) -> str:
    """Import ``path`` (a dotted module path) and register it as a plugin."""
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise AutopruneError(f"cannot import plugin module {path!r}: {exc}") from exc
    except Exception as exc:  # the module's own error at import, in one line
        raise AutopruneError(f"cannot import plugin module {path!r}: {type(exc).__name__}: {exc}") from exc
    pm = get_plugin_manager()
    if pm.is_registered(module):
        return pm.get_name(module)
    name = register(module, name=path)
    if not pm.get_hookcallers(module):
        pm.unregister(module)
        _invalidate()
        raise AutopruneError(
            f"plugin module {path!r} implements no hook of autoprune (functions decorated with "
            "@autoprune.hookimpl, named autoprune_register_...)"
        )
    return name


def _invalidate() -> None:
    global _registries
    _registries = None


def plugin_source(plugin: object) -> Source:
    """The :class:`Source` of a registered plugin: its name and distribution, if any."""
    pm = get_plugin_manager()
    name = pm.get_name(plugin) or repr(plugin)
    if name in _distributions:
        return Source(name, *_distributions[name])
    return Source(name)


def get_registries() -> Registries:
    """Registries filled by every plugin's hooks (cached until a plugin is added or removed)."""
    global _registries
    if _registries is None:
        registries = Registries(**{kind.plural: Registry(kind.name, kind.options) for kind in KINDS})
        hooks = get_plugin_manager().hook
        for kind in KINDS:
            _collect(getattr(hooks, kind.hook), registries.of(kind.name), kind.obj_arg)
        _registries = registries
    return _registries


def _collect(hook: pluggy.HookCaller, registry: Registry, obj_arg: str) -> None:
    # Each implementation is called with its own ``register`` so the registry knows
    # which plugin an object came from; call order is pluggy's (last registered first).
    for impl in reversed(hook.get_hookimpls()):
        source = plugin_source(impl.plugin)

        def register_one(name: str, obj: Any = None, *, source: Source = source, **options: Any):
            if obj is None and obj_arg in options:
                obj = options.pop(obj_arg)
            return registry.add(name, obj, source=source, **options)

        try:
            impl.function(register=register_one)
        except AutopruneError:
            raise
        except Exception as exc:  # a plugin's own error, named in one line
            raise AutopruneError(
                f"plugin {source.plugin!r} failed in {hook.name}: {type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from exc


def list_entries(kind: str | None = None) -> list[Entry]:
    """Every registered entry (optionally of one kind), sorted by kind and name."""
    entries = [e for reg in get_registries() for e in reg if kind in (None, e.kind)]
    return sorted(entries, key=lambda e: (e.kind, e.name))
