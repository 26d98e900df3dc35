"""autoprune: search per-layer structural pruning rates and importance criteria.

The public API::

    import autoprune
    groups = autoprune.prunable_groups(model, x)
    autoprune.prune(model, x, 0.3, importance="l1")
    autoprune.measure(model, x)  # {"flops": ..., "params": ...}
    result = autoprune.search(model, data, autoprune.SearchSettings(max_accuracy_drop=1.0))
    autoprune.run_study("studies/quickstart.toml")  # what `autoprune search` does: report, best.pt
    autoprune.Study.load("runs/quickstart").export("model.onnx", format="onnx")

The code is laid out as the data flows: ``settings`` (one validated settings
object), the plugin system (``hookspecs``, ``plugins``, ``registry``, ``zoo``),
``engine/`` (channel groups, importances, removal), ``training`` and
``checkpoint``, ``searcher/`` (space, evaluation, the Optuna loop) and
``results/`` (the study record, report, export, :class:`Study`), and
``workflow`` (a study file run end to end, which the command line prints).

Plugins implement the hooks in :mod:`autoprune.hookspecs` with
:data:`autoprune.hookimpl`.
"""

from importlib.metadata import PackageNotFoundError, version

from .checkpoint import load_checkpoint
from .data import DataSplits, split_train_val
from .engine import (
    ChannelGroup,
    CoupledLayer,
    channel_groups,
    prunable_groups,
    prune,
    unprunable_groups,
)
from .errors import (
    AutopruneError,
    DuplicateNameError,
    PluginError,
    PruningError,
    SearchInterrupted,
    UnknownNameError,
)
from .hookspecs import hookimpl
from .metrics import MetricContext, count_flops, count_params, measure, measure_metrics
from .plugins import get_plugin_manager, get_registries
from .registry import Entry, Source
from .results import Study, load
from .searcher import SearchResult, search
from .settings import Options, SearchSettings, TrainSettings
from .tasks import Task
from .training import train
from .workflow import run_study
from .zoo import (
    create_dataset,
    create_model,
    create_task,
    get_importance,
    get_metric,
    get_weight_importance,
    list_datasets,
    list_importances,
    list_metrics,
    list_models,
    list_tasks,
    list_weight_importances,
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
    "MetricContext",
    "Options",
    "PluginError",
    "PruningError",
    "SearchInterrupted",
    "SearchResult",
    "SearchSettings",
    "Source",
    "Study",
    "Task",
    "TrainSettings",
    "UnknownNameError",
    "__version__",
    "channel_groups",
    "count_flops",
    "count_params",
    "create_dataset",
    "create_model",
    "create_task",
    "get_importance",
    "get_metric",
    "get_plugin_manager",
    "get_registries",
    "get_weight_importance",
    "hookimpl",
    "list_datasets",
    "list_importances",
    "list_metrics",
    "list_models",
    "list_tasks",
    "list_weight_importances",
    "load",
    "load_checkpoint",
    "measure",
    "measure_metrics",
    "prunable_groups",
    "prune",
    "run_study",
    "search",
    "split_train_val",
    "train",
    "unprunable_groups",
]
