"""The unpruned baseline: a checkpoint, or a model trained once and cached.

The cache key hashes everything that determines the trained weights (model and
dataset names and parameters, the recipe, the seed), so a second run with the
same study reuses the weights and a changed recipe trains anew. Files are
written atomically: a crash never leaves a half-written checkpoint that a later
run would trust.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .config import StudyConfig, TrainRecipe
from .errors import AutopruneError
from .metrics import accuracy


def cache_key(config: StudyConfig) -> str:
    identity = {
        "model": config.model, "model_params": config.model_params,
        "dataset": config.dataset, "dataset_params": config.dataset_params,
        "recipe": asdict(config.train), "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train(model: nn.Module, data, recipe: TrainRecipe, seed: int, log=print) -> nn.Module:
    """SGD with momentum and a cosine learning-rate schedule over ``recipe.epochs``."""
    torch.manual_seed(seed)
    loader = DataLoader(data.train, batch_size=recipe.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0)
    steps = max(1, recipe.epochs * len(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        for inputs, targets in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
            schedule.step()
        if log:
            elapsed = time.perf_counter() - start
            eta = elapsed / (epoch + 1) * (recipe.epochs - epoch - 1)
            log(f"  baseline epoch {epoch + 1}/{recipe.epochs} ({elapsed:.0f}s, ~{eta:.0f}s left)")
    return model.eval()


def build_model(config: StudyConfig, data) -> nn.Module:
    """The study's model, initialized from the study's seed (so retraining gives the same weights)."""
    from .zoo import create_model

    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return create_model(config.model, num_classes=data.num_classes, in_channels=data.input_shape[0],
                            **config.model_params)


def load_or_train(config: StudyConfig, model: nn.Module, data, log=print) -> tuple[nn.Module, Path | None, bool]:
    """Load the checkpoint, or the cached baseline, or train and cache one.

    Returns the model, the file its weights came from, and whether it was trained now.
    """
    if config.checkpoint:
        path = Path(config.checkpoint)
        if not path.is_file():
            raise AutopruneError(f"model.checkpoint {str(path)!r} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise AutopruneError(f"model.checkpoint {str(path)!r} does not fit model {config.model!r}: {exc}") from None
        return model.eval(), path, False

    path = config.out_dir / f"baseline-{cache_key(config)}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        return model.eval(), path, False
    if log:
        log(f"training the baseline ({config.train.epochs} epochs); cached as {path}")
    train(model, data, config.train, config.seed, log=log)
    val = DataLoader(data.val, batch_size=256)
    atomic_save({"state_dict": model.state_dict(), "val_accuracy": accuracy(model, val),
                 "key": cache_key(config)}, path)
    return model, path, True
