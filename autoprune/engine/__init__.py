"""The pruning engine: channel groups from Torch-Pruning's dependency graph, importances, removal.

``prune(model, x, rates, importance)`` removes channels; ``prunable_groups`` names
the groups a plan may set; ``channel_groups`` shows them as importances see them.
"""

from .groups import ChannelGroup, CoupledLayer
from .importance import DEFAULT_IMPORTANCE, Importance, ImportanceSpec, resolve_importance
from .inputs import call_model, output_shapes
from .prune import channel_groups, group_scores, group_sizes, prunable_groups, prune, unprunable_groups

__all__ = [
    "DEFAULT_IMPORTANCE",
    "ChannelGroup",
    "CoupledLayer",
    "Importance",
    "ImportanceSpec",
    "call_model",
    "channel_groups",
    "group_scores",
    "group_sizes",
    "output_shapes",
    "prunable_groups",
    "prune",
    "resolve_importance",
    "unprunable_groups",
]
