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
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import atomic_save, load_checkpoint
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
    a model registered for another task than the dataset's is refused before it is built."""
    check_model_task(study.model, study.dataset, data)
    with torch.random.fork_rng():
        torch.manual_seed(study.settings.seed)
        return create_model(
            study.model, num_classes=data.num_classes, in_channels=data.input_shape[0], **study.model_params
        )


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
