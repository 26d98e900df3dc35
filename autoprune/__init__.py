"""autoprune: search per-layer structural pruning rates and importance criteria.

The public API::

    import autoprune
    groups = autoprune.prunable_groups(model, x)
    autoprune.prune(model, x, 0.3, importance="l1")
    autoprune.measure(model, x)  # {"flops": ..., "params": ...}

Plugins implement the hooks in :mod:`autoprune.hookspecs` with
:data:`autoprune.hookimpl`.
"""

from importlib.metadata import PackageNotFoundError, version

from .data import DataSplits, split_train_val
from .errors import (
    AutopruneError,
    DuplicateNameError,
    PluginError,
    PruningError,
    UnknownNameError,
)
from .export import load
from .hookspecs import hookimpl
from .metrics import count_flops, count_params, measure
from .plugins import get_plugin_manager, get_registries
from .pruning import (
    ChannelGroup,
    CoupledLayer,
    channel_groups,
    prunable_groups,
    prune,
    unprunable_groups,
)
from .registry import Entry, Source
from .search import SearchResult, search
from .study import Study
from .zoo import (
    create_dataset,
    create_model,
    get_importance,
    list_datasets,
    list_importances,
    list_models,
)

try:
    __version__ = version("autoprune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "AutopruneError",
    "ChannelGroup",
    "CoupledLayer",
    "DataSplits",
    "DuplicateNameError",
    "Entry",
    "PluginError",
    "PruningError",
    "SearchResult",
    "Source",
    "Study",
    "UnknownNameError",
    "__version__",
    "channel_groups",
    "count_flops",
    "count_params",
    "create_dataset",
    "create_model",
    "get_importance",
    "get_plugin_manager",
    "get_registries",
    "hookimpl",
    "list_datasets",
    "list_importances",
    "list_models",
    "load",
    "measure",
    "prunable_groups",
    "prune",
    "search",
    "split_train_val",
    "unprunable_groups",
]
