"""The pruning engine: channel groups from Torch-Pruning's dependency graph, importances, removal.

``prune(model, x, rates, importance)`` removes channels; ``prunable_groups`` names
the groups a plan may set; ``channel_groups`` shows them as importances see them.
``prune_weights`` and ``prune_n_m`` zero single weights instead (masks, :mod:`.sparsity`),
ranked by a weight importance (``weight_scores``). ``reconstruct_layers`` refits the
layers that lost input channels by least squares (:mod:`.reconstruct`).
"""

from .groups import ChannelGroup, CoupledLayer
from .importance import (
    DEFAULT_IMPORTANCE,
    DEFAULT_WEIGHT_IMPORTANCE,
    Importance,
    ImportanceSpec,
    WeightImportance,
    resolve_importance,
    resolve_weight_importance,
    weight_scores,
)
from .inputs import call_model, call_network, input_shape, output_shapes
from .prune import (
    channel_groups,
    group_layers,
    group_scores,
    group_sizes,
    prunable_groups,
    prune,
    removal_count,
    unprunable_groups,
)
from .reconstruct import InputGrams, reconstruct_layers
from .sparsity import held_zeros, make_permanent, n_m_violations, prune_n_m, prune_weights, sparsity_stats

__all__ = [
    "DEFAULT_IMPORTANCE",
    "DEFAULT_WEIGHT_IMPORTANCE",
    "ChannelGroup",
    "CoupledLayer",
    "Importance",
    "ImportanceSpec",
    "InputGrams",
    "WeightImportance",
    "call_model",
    "call_network",
    "channel_groups",
    "group_layers",
    "group_scores",
    "group_sizes",
    "held_zeros",
    "input_shape",
    "make_permanent",
    "n_m_violations",
    "output_shapes",
    "prunable_groups",
    "prune",
    "prune_n_m",
    "prune_weights",
    "reconstruct_layers",
    "removal_count",
    "resolve_importance",
    "resolve_weight_importance",
    "sparsity_stats",
    "unprunable_groups",
    "weight_scores",
]
