"""The fixed batches a study draws from its data: the calibration batches and the validation order.

Every trial of a study, its baselines, its rebuild and its export see the same
batches for the same seed, in any process, so their scores can be compared.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .zoo import dataset_task


def calibration_batches(data: Any, count: int, batch_size: int, seed: int) -> list:
    """The fixed training batches every trial recalibrates BatchNorm on.

    The same for the same seed, in any process: the order comes from a seeded
    generator, and random augmentations (which draw from torch's, Python's and
    NumPy's global generators) run under generators seeded from ``seed``, whose
    previous state is restored afterwards.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            loader = DataLoader(
                data.train,
                batch_size=batch_size,
                shuffle=True,
                collate_fn=dataset_task(data).collate,
                generator=torch.Generator().manual_seed(seed),
            )
            return [batch for _, batch in zip(range(count), loader)]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def validation_batches(data: Any, batch_size: int, seed: int) -> list:
    """The whole validation split in a fixed shuffled order, so a stopped count has seen every class."""
    loader = DataLoader(
        data.val,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=dataset_task(data).collate,
        generator=torch.Generator().manual_seed(seed),
    )
    return list(loader)
