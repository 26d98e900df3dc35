"""Study files (TOML) -> a validated :class:`StudyConfig`.

Every key is checked once, here: an unknown key names the closest valid one, a
wrong type names the value received. Nothing downstream reads the file again.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import AutopruneError
from .search import OBJECTIVES, check_objectives



@dataclass(frozen=True)
class TrainRecipe:
    """How autoprune trains the baseline when no checkpoint is given (SGD, cosine schedule)."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass(frozen=True)
class SearchSpace:
    """The search's knobs: rate grid, importances, recovery and warm starts."""

    importances: tuple[str, ...] = ("l1",)
    rate_min: float = 0.0
    rate_max: float = 0.8
    rate_step: float = 0.05
    calibration_batches: int = 20
    batch_size: int = 128
    uniform_starts: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class StudyConfig:
    name: str
    model: str
    dataset: str
    max_accuracy_drop: float
    model_params: dict[str, Any] = field(default_factory=dict)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    objective: str | tuple[str, ...] = "flops"
    latency_batch_size: int = 1
    trials: int = 50
    timeout: float | None = None
    seed: int = 0
    out: str | None = None
    storage: str | None = None
    train: TrainRecipe = TrainRecipe()
    search: SearchSpace = SearchSpace()
    path: str | None = None

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS: dict[str, dict[str, Any]] = {
    "study": {"name": str, "seed": int, "trials": int, "timeout": (int, float), "objective": (str, list),
              "objectives": list, "latency_batch_size": int,
              "max_accuracy_drop": (int, float), "out": str, "storage": str},
    "model": {"name": str, "params": dict, "checkpoint": str},
    "dataset": {"name": str, "params": dict},
    "train": {"epochs": int, "batch_size": int, "lr": (int, float), "momentum": (int, float),
              "weight_decay": (int, float)},
    "search": {"importances": list, "rate_min": (int, float), "rate_max": (int, float),
               "rate_step": (int, float), "calibration_batches": int, "batch_size": int,
               "uniform_starts": list},
}
_REQUIRED = {("study", "max_accuracy_drop"), ("model", "name"), ("dataset", "name")}


def _unknown(kind: str, name: str, valid) -> AutopruneError:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "valid: " + ", ".join(sorted(valid))
    return AutopruneError(f"unknown {kind} {name!r}; {hint}")


def _check_type(where: str, value: Any, expected) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise AutopruneError(f"{where} must be {names}, got {type(value).__name__} {value!r}")


def _objective(study: dict[str, Any]) -> str | tuple[str, ...]:
    if "objective" in study and "objectives" in study:
        raise AutopruneError("give study.objective (one) or study.objectives (several), not both")
    value = study.get("objectives", study.get("objective", "flops"))
    return value if isinstance(value, str) else tuple(value)


def parse_config(raw: dict[str, Any], *, path: str | None = None, name: str | None = None) -> StudyConfig:
    """Validate a parsed study file."""
    for section, body in raw.items():
        if section not in _SECTIONS:
            raise _unknown("section", section, _SECTIONS)
        if not isinstance(body, dict):
            raise AutopruneError(f"[{section}] must be a table, got {type(body).__name__}")
        for key, value in body.items():
            if key not in _SECTIONS[section]:
                raise _unknown(f"key in [{section}]", key, _SECTIONS[section])
            _check_type(f"{section}.{key}", value, _SECTIONS[section][key])
    for section, key in sorted(_REQUIRED):
        if key not in raw.get(section, {}):
            raise AutopruneError(f"the study file needs {section}.{key}")

    study, model, dataset = raw.get("study", {}), raw["model"], raw["dataset"]
    search = dict(raw.get("search", {}))
    if "importances" in search:
        search["importances"] = tuple(search["importances"])
    if "uniform_starts" in search:
        search["uniform_starts"] = tuple(search["uniform_starts"])
    config = StudyConfig(
        name=study.get("name") or name or "study",
        model=model["name"],
        model_params=dict(model.get("params", {})),
        checkpoint=model.get("checkpoint"),
        dataset=dataset["name"],
        dataset_params=dict(dataset.get("params", {})),
        max_accuracy_drop=float(study["max_accuracy_drop"]),
        objective=_objective(study),
        latency_batch_size=study.get("latency_batch_size", 1),
        trials=study.get("trials", 50),
        timeout=study.get("timeout"),
        seed=study.get("seed", 0),
        out=study.get("out"),
        storage=study.get("storage"),
        train=TrainRecipe(**raw.get("train", {})),
        search=SearchSpace(**search),
        path=path,
    )
    validate(config)
    return config


def validate(config: StudyConfig) -> None:
    """Check value ranges (types were checked while parsing)."""
    if isinstance(config.objective, str) and config.objective not in OBJECTIVES:
        raise _unknown("objective", config.objective, OBJECTIVES)
    check_objectives(config.objective)
    if config.latency_batch_size < 1:
        raise AutopruneError(f"study.latency_batch_size must be at least 1, got {config.latency_batch_size}")
    reserved = sorted({"num_classes", "in_channels"} & set(config.model_params))
    if reserved:
        raise AutopruneError(
            f"model.params cannot set {', '.join(reserved)}: the dataset decides them"
        )
    if config.max_accuracy_drop < 0:
        raise AutopruneError(f"study.max_accuracy_drop cannot be negative but got {config.max_accuracy_drop}")
    if config.trials < 1:
        raise AutopruneError(f"study.trials must be at least 1, got {config.trials}")
    s = config.search
    if not s.importances or not all(isinstance(i, str) for i in s.importances):
        raise AutopruneError(f"search.importances must be a non-empty list of names, got {list(s.importances)}")
    if not 0 <= s.rate_min <= s.rate_max < 1:
        raise AutopruneError(
            f"search rates need 0 <= rate_min <= rate_max < 1, got rate_min={s.rate_min}, rate_max={s.rate_max}"
        )
    if not 0 < s.rate_step <= max(s.rate_max - s.rate_min, s.rate_step):
        raise AutopruneError(f"search.rate_step must be positive, got {s.rate_step}")
    for r in s.uniform_starts:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not s.rate_min <= r <= s.rate_max:
            raise AutopruneError(f"search.uniform_starts must lie in [rate_min, rate_max], got {r!r}")
    for key in ("calibration_batches", "batch_size"):
        if getattr(s, key) < 1:
            raise AutopruneError(f"search.{key} must be at least 1, got {getattr(s, key)}")
    t = config.train
    if t.epochs < 0 or t.batch_size < 1 or t.lr <= 0:
        raise AutopruneError(f"train needs epochs >= 0, batch_size >= 1 and lr > 0, got {t}")


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate the study file at ``path``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AutopruneError(f"study file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise AutopruneError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(raw, path=str(path), name=path.stem)
