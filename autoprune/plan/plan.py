"""The plan: everything one trial's pruning is, as one frozen, typed value.

A plan names, per channel group, the fraction of channels to remove (``rates``) and
the importance that ranks them (``methods``); a global-scope plan also keeps the two
numbers it was resolved from (``global_rate``, the fraction of all channels removed,
and ``global_max_rate``, the most any group may lose; Fang et al., "DepGraph", CVPR
2023). Weight-level pruning adds a sparsity per group (``sparsity``) or the groups
that take an N:M pattern (``nm_groups``, ``nm_pattern``; Mishra et al., "Accelerating
Sparse Deep Neural Networks", 2021), both ranked by ``weight_importance``. How it is
applied: in ``steps`` equal steps, each followed by BatchNorm recalibration and
``recovery_steps`` optimizer steps (iterative pruning; Han et al., NeurIPS 2015),
kept channel counts a multiple of ``round_to``, and the layers after a pruned group
refit by least squares (``reconstruct``; He et al., "Channel Pruning for
Accelerating Very Deep Neural Networks", ICCV 2017).

One plan object travels from the sampler (:class:`~autoprune.plan.PlanSpace`)
through evaluation to the study record, the rebuild and the export: a setting that
changes how a plan is applied is one field here, so what is exported is what was
scored. :meth:`Plan.to_dict` is its JSON form (``best_plan.json``, ``best.pt``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine import held_zeros, removal_count
from ..errors import AutopruneError
from ..settings import SearchSettings

if TYPE_CHECKING:
    from torch import nn

    from ..tasks import Task
    from .apply import BaselineStructure

#: The N:M pattern and weight importance a plan takes when it names none (the study file's defaults).
DEFAULT_NM = tuple(SearchSettings.default("nm"))
DEFAULT_WEIGHT_IMPORTANCE = SearchSettings.default("weight_importance")
#: Decimals a rate is written with when it is a decimal of that many places up to float noise.
RATE_DECIMALS = 6


def tidy_rate(value: float) -> float:
    """``value`` without float noise: rounded to :data:`RATE_DECIMALS` decimals when it is within 1e-12 of
    that (``0.05 * 12 = 0.6000000000000001`` is 0.6), else as it is (a global plan's ``1 / 3`` of a
    group's channels stays exact, as 0.333333 would remove none of three).

    The channels a rate removes (``floor(rate * channels + 1e-9)``) are the same either way, so a plan
    prunes what it pruned before it was tidied; a rate 1e-12 away from a six-decimal number it is not
    is a fraction of over a million channels."""
    rounded = round(value, RATE_DECIMALS)
    return rounded if abs(rounded - value) <= 1e-12 else value


@dataclass(frozen=True)
class Plan:
    """What a trial prunes and how; see the module docstring. Build it with keywords;
    ``plan.replace(round_to=8)`` gives a changed copy."""

    rates: Mapping[str, float] = field(default_factory=dict)
    methods: Mapping[str, str] = field(default_factory=dict)
    global_rate: float | None = None
    global_max_rate: float | None = None
    sparsity: Mapping[str, float] = field(default_factory=dict)
    nm_groups: tuple[str, ...] = ()
    nm_pattern: tuple[int, int] = DEFAULT_NM
    weight_importance: str = DEFAULT_WEIGHT_IMPORTANCE
    steps: int = 1
    recovery_steps: int = 0
    round_to: int = 1
    round_min: int = 0
    reconstruct: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        # rates without float noise, so best_plan.json, the repr and equal plans read 0.6, not 0.6000000000000001
        put("rates", {str(g): tidy_rate(float(r)) for g, r in dict(self.rates).items()})
        put("methods", {str(g): str(m) for g, m in dict(self.methods).items()})
        put("sparsity", {str(g): tidy_rate(float(s)) for g, s in dict(self.sparsity).items()})
        for name in ("global_rate", "global_max_rate"):
            if getattr(self, name) is not None:
                put(name, tidy_rate(float(getattr(self, name))))
        put("nm_groups", tuple(self.nm_groups))
        put("nm_pattern", tuple(int(k) for k in self.nm_pattern))
        for name, rate in (*self.rates.items(), *self.sparsity.items()):
            if not (0.0 <= rate < 1.0 and math.isfinite(rate)):
                raise AutopruneError(f"a plan's rates and sparsities are in [0, 1); group {name!r} has {rate!r}")
        put("sparsity", {g: s for g, s in self.sparsity.items() if s > 0})  # a sparsity of 0 zeroes nothing
        for name, low in (("steps", 1), ("recovery_steps", 0), ("round_to", 1), ("round_min", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise AutopruneError(f"a plan's {name} is an integer >= {low}, got {value!r}")
        if (self.global_rate is None) != (self.global_max_rate is None):
            raise AutopruneError("a global plan has both global_rate and global_max_rate, or neither")
        n, m = self.nm_pattern if len(self.nm_pattern) == 2 else (0, 0)
        if not 0 < n < m:
            raise AutopruneError(f"a plan's nm_pattern is (N, M) with 0 < N < M, got {self.nm_pattern!r}")
        if self.steps == 1:  # recovery happens between steps: a one-shot plan has none
            put("recovery_steps", 0)
        if self.round_to == 1:  # nothing is rounded: no group is too narrow for it
            put("round_min", 0)
        if not self.nm_groups:  # parts that change nothing are left at their defaults, so equal plans compare equal
            put("nm_pattern", DEFAULT_NM)
        if not self.prunes_weights:
            put("weight_importance", DEFAULT_WEIGHT_IMPORTANCE)
        put("reconstruct", bool(self.reconstruct))

    def __repr__(self) -> str:
        """The dataclass's repr with each rate to :data:`RATE_DECIMALS` decimals: ``Plan(rates={'conv1': 0.6,
        'conv2': 0.333333}, ...)``."""

        def shown(value: Any) -> str:
            if isinstance(value, float):
                return repr(round(value, RATE_DECIMALS))
            if isinstance(value, dict):
                return "{" + ", ".join(f"{k!r}: {shown(v)}" for k, v in value.items()) + "}"
            return repr(value)

        return f"Plan({', '.join(f'{f.name}={shown(getattr(self, f.name))}' for f in dataclasses.fields(self))})"

    @property
    def scope(self) -> str:
        """``"global"`` for a plan resolved from a global rate, else ``"local"``."""
        return "local" if self.global_rate is None else "global"

    @property
    def prunes_weights(self) -> bool:
        """Whether the plan zeroes single weights (a sparsity or the N:M pattern) besides channels."""
        return bool(self.sparsity or self.nm_groups)

    def finetune_hook(self, model: nn.Module) -> Callable[[int, int], None] | None:
        """The ``after_step`` that fine-tuning ``model``, this plan's pruned model, takes: its zeroed weights
        held at zero (:func:`~autoprune.engine.held_zeros`); None for a plan that zeroes none."""
        return held_zeros(model) if self.prunes_weights else None

    def replace(self, **changes: Any) -> Plan:
        return dataclasses.replace(self, **changes)

    def removed_fractions(self, sizes: Mapping[str, tuple[int, int]]) -> dict[str, float]:
        """The fraction of each group's channels the plan really removes, floors and ``round_to`` applied
        (``sizes``: the baseline's ``{group: (channels, channel groups)}``)."""
        fractions = {}
        for group, rate in self.rates.items():
            channels, channel_groups = sizes[group]
            size = channels // channel_groups
            fractions[group] = removal_count(size, rate, channel_groups, self.rounding(channels)) / size
        return fractions

    def structure_key(self, sizes: Mapping[str, tuple[int, int]]) -> str:
        """What identifies the model this plan prunes from a baseline of ``sizes`` (``{group: (channels,
        channel groups)}``): the share of channels each group really loses, the importance of each group
        that loses any, and every other part. Plans with equal keys prune the same model (rates that round
        to the same channel counts, a global plan and the local plan of its resolved rates)."""
        removed = {g: round(f, 9) for g, f in self.removed_fractions(sizes).items() if f > 0}
        out = self.to_dict()
        out.pop("global", None)
        out.update(rates=removed, methods={g: self.methods.get(g) for g in removed})
        return json.dumps(out, sort_keys=True)

    def rounding(self, channels: int) -> int:
        """What a group of ``channels`` channels rounds its kept count to: ``round_to``, or 1 in a group
        narrower than ``round_min``."""
        return self.round_to if channels >= self.round_min else 1

    # -- applied to a model ---------------------------------------------------------------

    def apply(
        self,
        baseline: nn.Module,
        example_inputs: Any,
        calibration: list,
        *,
        scores: dict | None = None,
        structure: BaselineStructure | None = None,
        task: Task | None = None,
    ) -> nn.Module:
        """A copy of ``baseline`` pruned with this plan, its BatchNorm recalibrated on ``calibration``
        (``task``: the data's, whose loss gives gradient importances their gradients; classification when None)."""
        from .apply import apply_plan

        return apply_plan(baseline, example_inputs, self, calibration, scores=scores, structure=structure, task=task)

    def pruned(
        self,
        baseline: nn.Module,
        example_inputs: Any,
        calibration: list,
        *,
        scores: dict | None = None,
        structure: BaselineStructure | None = None,
        task: Task | None = None,
    ) -> nn.Module:
        """A copy of ``baseline`` pruned with this plan, before its final BatchNorm recalibration."""
        from .apply import pruned_copy

        return pruned_copy(baseline, example_inputs, self, calibration, scores=scores, structure=structure, task=task)

    # -- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON data: ``rates`` and ``methods``, and each other part only where it is not
        the default (``global``, ``sparsity``, ``nm``, ``weight_importance``, ``steps``,
        ``recovery_steps``, ``round_to``, ``round_min``, ``reconstruct``)."""
        out: dict[str, Any] = {"rates": dict(self.rates), "methods": dict(self.methods)}
        if self.scope == "global":
            out["global"] = {"rate": self.global_rate, "max_rate": self.global_max_rate}
        if self.sparsity:
            out["sparsity"] = dict(self.sparsity)
        if self.nm_groups:
            out["nm"] = {"groups": list(self.nm_groups), "pattern": list(self.nm_pattern)}
        if self.prunes_weights:
            out["weight_importance"] = self.weight_importance
        if self.round_to > 1:
            out["round_to"] = self.round_to
        if self.round_min:
            out["round_min"] = self.round_min
        if self.reconstruct:
            out["reconstruct"] = True
        if self.steps > 1:
            out["steps"] = self.steps
            if self.recovery_steps:
                out["recovery_steps"] = self.recovery_steps
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "the plan") -> Plan:
        """The plan :meth:`to_dict` wrote (keys it does not know, such as ``trial``, are ignored)."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("rates"), Mapping):
            raise AutopruneError(f"{where} is not an autoprune plan: it needs 'rates' as an object of group: rate")
        nm = raw.get("nm") or {}
        found = raw.get("global") or {}
        try:
            return cls(
                rates=raw["rates"],
                methods=raw.get("methods") or {},
                global_rate=found.get("rate"),
                global_max_rate=found.get("max_rate"),
                sparsity=raw.get("sparsity") or {},
                nm_groups=tuple(nm.get("groups", ())),
                nm_pattern=tuple(nm.get("pattern", DEFAULT_NM)),
                weight_importance=raw.get("weight_importance", DEFAULT_WEIGHT_IMPORTANCE),
                steps=raw.get("steps", 1),
                recovery_steps=raw.get("recovery_steps", 0),
                round_to=raw.get("round_to", 1),
                round_min=raw.get("round_min", 0),
                reconstruct=bool(raw.get("reconstruct", False)),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise AutopruneError(f"{where} is not an autoprune plan: {exc}") from None

    def to_json(self, **extra: Any) -> str:
        """``to_dict()`` as indented JSON, with ``extra`` keys first (``trial=12``)."""
        return json.dumps({**extra, **self.to_dict()}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "the plan") -> Plan:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AutopruneError(f"{where} is not JSON: {exc}") from None
        return cls.from_dict(raw, where)
