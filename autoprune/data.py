"""The object every dataset factory returns, and the helper that carves a validation split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Subset

from .errors import AutopruneError

#: Seed of the train/validation split: fixed, so every run sees the same split.
SPLIT_SEED = 0


@dataclass(frozen=True)
class DataSplits:
    """Training, validation and test splits of one dataset.

    ``val`` is carved from the training data, so model selection never sees
    ``test``; the search never reads ``test`` at all. ``task`` names what the
    targets are: ``"classification"`` (class indices), ``"detection"`` (dicts of
    ``boxes`` and ``labels``, as torchvision's detectors take them) or
    ``"segmentation"`` (per-pixel class maps).
    """

    train: Dataset
    val: Dataset
    test: Dataset | None
    num_classes: int
    input_shape: tuple[int, int, int]
    task: str = "classification"


def split_train_val(dataset: Dataset, val_fraction: float = 0.1, seed: int = SPLIT_SEED) -> tuple[Subset, Subset]:
    """Split ``dataset`` into disjoint (train, val) subsets with a fixed seed."""
    if not 0.0 < val_fraction < 1.0:
        raise AutopruneError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n = len(dataset)
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise AutopruneError(f"a dataset of {n} samples is too small for val_fraction={val_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(order[n_val:])), Subset(dataset, sorted(order[:n_val]))
