"""The unpruned baseline of a study file: its checkpoint, or a model trained once and cached.

The cache key hashes everything that determines the trained weights (model and
dataset names and parameters, the recipe, the seed), so a second run with the
same study reuses the weights and a changed recipe trains anew. The cache is
written atomically and read back through :func:`autoprune.load_checkpoint`, like
any checkpoint, so the study records its absolute path.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import atomic_save, load_checkpoint
from .engine import call_model, input_shape
from .errors import AutopruneError
from .settings import StudyFile
from .training import train
from .zoo import create_model, dataset_task, list_models, model_task


def cache_key(study: StudyFile) -> str:
    identity = {
        "model": study.model,
        "model_params": study.model_params,
        "dataset": study.dataset,
        "dataset_params": study.dataset_params,
        "recipe": study.train.cache_identity(),
        "seed": study.settings.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_model(study: StudyFile, data) -> nn.Module:
    """The study's model, initialized from the study's seed (so retraining gives the same weights);
    a model registered for another task than the dataset's is refused before it is built, and one that
    cannot run on the dataset's example input (a width of 0, an input too small for it) once it is."""
    check_model_task(study.model, study.dataset, data)
    with torch.random.fork_rng(), warnings.catch_warnings():
        # a zero-width layer warns once per tensor; the forward pass below names the parameters instead
        warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op", UserWarning)
        torch.manual_seed(study.settings.seed)
        model = create_model(
            study.model, num_classes=data.num_classes, in_channels=data.input_shape[0], **study.model_params
        )
    check_forward(model, study.model, study.model_params, data)
    return model


def check_forward(model: nn.Module, name: str, params: Mapping[str, Any], data) -> None:
    """Model ``name`` built with ``params`` runs one forward pass (in eval mode, without gradients) on
    ``data``'s example input; else one line naming the model, its parameters, the input and the error."""
    example = dataset_task(data).example(data.val[0][0])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            call_model(model, example)
    except AutopruneError:
        raise
    except Exception as exc:  # whatever the model raises, its parameters or the data's input shape are the cause
        given = ", ".join(f"{k}={v!r}" for k, v in params.items())
        batch, shape = input_shape(example)
        shown = (batch, *shape) if isinstance(example, torch.Tensor) else f"{batch} x {tuple(shape)}"
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise AutopruneError(
            f"model {name!r} {'with ' + given if given else '(default parameters)'} fails on a {shown} input: "
            f"{type(exc).__name__}: {detail}"
        ) from exc
    finally:
        model.train(was_training)


def check_model_task(model: str, dataset: str, data) -> None:
    """Registered model ``model`` serves the task of ``dataset``'s splits ``data``, as it registered it
    (``register(..., task=...)``; classification when it says nothing)."""
    from .tasks import DEFAULT_TASK

    serves = model_task(model)
    needs = getattr(data, "task", DEFAULT_TASK)
    if serves != needs:
        fitting = list_models(task=needs)
        raise AutopruneError(
            f"model {model!r} is registered for {serves}, but dataset {dataset!r} gives {needs} samples; "
            f"{needs} models: {', '.join(fitting[:8]) + (', ...' if len(fitting) > 8 else '') or 'none registered'}"
        )


def load_or_train(
    study: StudyFile, model: nn.Module, data, log: Callable[[str], None] | None = None
) -> tuple[nn.Module, bool]:
    """Load the study's checkpoint, or the cached baseline, or train and cache one.

    Returns the model (in eval mode) and whether it was trained now.
    """
    if study.checkpoint:
        load_checkpoint(model, study.checkpoint, what="model.checkpoint")
        return model.eval(), False
    path = study.out_dir / f"baseline-{cache_key(study)}.pt"
    if not path.is_file():
        if log:
            log(f"training the baseline ({study.train.epochs} epochs); cached as {path}")
        train(model, data, study.train, seed=study.settings.seed, log=log)
        task = dataset_task(data)
        val = DataLoader(data.val, batch_size=256, collate_fn=task.collate)
        atomic_save(
            {
                "state_dict": model.state_dict(),
                "val_accuracy": task.score(model, val),  # the task's score
                "key": cache_key(study),
            },
            path,
        )
        load_checkpoint(model, path, what="the cached baseline")
        return model.eval(), True
    load_checkpoint(model, path, what="the cached baseline")
    return model.eval(), False
