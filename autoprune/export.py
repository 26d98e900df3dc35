"""From a trial to a deployable model: rebuild, optionally fine-tune, measure, save, verify.

The pruned model is rebuilt from the baseline weights and the trial's plan (the
study's user attributes say which model, data and weights), so nothing but the
Optuna storage and the baseline file is needed. Fine-tuning can distil from the
unpruned baseline (Hinton et al., "Distilling the Knowledge in a Neural Network",
2015). Latency is measured, not estimated: the median of repeated timed forward
passes with ``torch.utils.benchmark``. Exports in TorchScript and ONNX are
checked against the PyTorch model on a batch of real inputs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .baseline import atomic_save
from .errors import AutopruneError
from .metrics import accuracy, latency_ms, measure
from .search import apply_plan, best_feasible_trial, calibration_batches_of, plan_from_trial
from .zoo import create_dataset, create_model

FORMATS = ("torch", "torchscript", "onnx")
_MAGIC = "autoprune-model-v1"


@dataclass
class Rebuilt:
    baseline: nn.Module
    model: nn.Module
    data: Any
    trial: optuna.trial.FrozenTrial
    plan: dict


def choose_trial(study: optuna.Study, number: int | None = None) -> optuna.trial.FrozenTrial:
    """Trial ``number``, or the best feasible trial."""
    if number is None:
        trial = best_feasible_trial(study)
        if trial is None:
            raise AutopruneError(f"study {study.study_name!r} has no feasible trial; name one with --trial N")
        return trial
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials or trials[number].state != optuna.trial.TrialState.COMPLETE:
        done = sorted(n for n, t in trials.items() if t.state == optuna.trial.TrialState.COMPLETE)
        raise AutopruneError(f"trial {number} is not a completed trial of {study.study_name!r}; completed: "
                             f"{done[0]}..{done[-1]}" if done else f"study {study.study_name!r} has no completed trial")
    return trials[number]


def rebuild(study: optuna.Study, number: int | None = None) -> Rebuilt:
    """Rebuild the baseline and the pruned model of a trial of a study made by ``autoprune search``."""
    attrs = study.user_attrs
    missing = [k for k in ("model", "dataset", "baseline_weights", "groups") if k not in attrs]
    if missing:
        raise AutopruneError(
            f"study {study.study_name!r} lacks {', '.join(missing)}: it was not made by `autoprune search`; "
            "rebuild its models with autoprune.search's SearchResult instead"
        )
    trial = choose_trial(study, number)
    data = create_dataset(attrs["dataset"], **attrs.get("dataset_params", {}))
    baseline = create_model(attrs["model"], num_classes=data.num_classes, in_channels=data.input_shape[0],
                            **attrs.get("model_params", {}))
    weights = Path(attrs["baseline_weights"])
    if not weights.is_file():
        raise AutopruneError(f"the baseline weights {str(weights)!r} of study {study.study_name!r} are gone")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    baseline.load_state_dict(state.get("state_dict", state))
    baseline.eval()
    calibration = calibration_batches_of(data, attrs.get("calibration_batches", 20),
                                         attrs.get("batch_size", 128), attrs.get("seed", 0))
    plan = plan_from_trial(study, trial)
    example = data.val[0][0].unsqueeze(0)
    model = apply_plan(baseline, example, plan, calibration)
    return Rebuilt(baseline, model, data, trial, plan)


def finetune(model: nn.Module, data, epochs: int, *, teacher: nn.Module | None = None,
             temperature: float = 4.0, alpha: float = 0.7, lr: float = 0.01, batch_size: int = 64,
             seed: int = 0) -> nn.Module:
    """Fine-tune with SGD and a cosine schedule; with ``teacher``, distil from it (Hinton et al., 2015)."""
    torch.manual_seed(seed)
    loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = max(1, epochs * len(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    if teacher is not None:
        teacher.eval()
    for _ in range(epochs):
        model.train()
        for inputs, targets in loader:
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets)
            if teacher is not None:
                with torch.no_grad():
                    soft = F.softmax(teacher(inputs) / temperature, dim=1)
                distil = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
                loss = (1 - alpha) * loss + alpha * temperature**2 * distil
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def evaluate(model: nn.Module, data, example: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Validation and test accuracy, FLOPs, parameters and latency of ``model``."""
    result: dict[str, float] = {"val_accuracy": accuracy(model, DataLoader(data.val, batch_size=batch_size))}
    if data.test is not None:
        result["test_accuracy"] = accuracy(model, DataLoader(data.test, batch_size=batch_size))
    result.update(measure(model, example))
    result["latency_ms"] = latency_ms(model, example)
    return result


def save(model: nn.Module, path: str | Path, fmt: str, example: torch.Tensor, check: torch.Tensor,
         metadata: dict | None = None, atol: float = 1e-4) -> float:
    """Save ``model`` as ``fmt`` and return the largest output difference on ``check`` after reloading."""
    if fmt not in FORMATS:
        raise AutopruneError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    model = model.eval()
    with torch.no_grad():
        expected = model(check)
    if fmt == "torch":
        save_model(model, path, metadata)
        with torch.no_grad():
            got = load(path)(check)
    elif fmt == "torchscript":
        tmp = path.with_name(path.name + ".tmp")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still deployed widely
            torch.jit.trace(model, example).save(str(tmp))
            tmp.replace(path)
            got = torch.jit.load(str(path))(check)
    else:
        import onnxruntime

        tmp = path.with_name(path.name + ".tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        tmp.replace(path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"input": check.numpy()})[0])
    difference = float((got - expected).abs().max())
    if difference > atol:
        raise AutopruneError(f"the {fmt} export of {path} differs from the PyTorch model by {difference:.2e} (> {atol})")
    return difference


def real_batch(data, count: int) -> torch.Tensor:
    """The first ``count`` validation inputs, to check exports on real data."""
    return torch.stack([data.val[i][0] for i in range(min(count, len(data.val)))])


def save_model(model: nn.Module, path: str | Path, metadata: dict | None = None) -> None:
    """Save a whole pruned model (written atomically) so that :func:`load` reads it without its plan."""
    atomic_save({"format": _MAGIC, "model": model, "metadata": metadata or {}}, Path(path))


def load(path: str | Path) -> nn.Module:
    """Load a model saved by ``autoprune export --format torch`` (no plan needed)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise AutopruneError(f"{str(path)!r} does not exist") from None
    if not isinstance(saved, dict) or saved.get("format") != _MAGIC:
        raise AutopruneError(f"{str(path)!r} is not a model saved by autoprune export --format torch")
    return saved["model"].eval()
