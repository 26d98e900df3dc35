"""The fixed batches a study draws from its data: the calibration batches and the validation order.

Every trial of a study, its baselines, its rebuild and its export see the same
batches for the same seed, in any process, so their scores can be compared.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

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


#: Validation batches kept in memory after their first full pass when they take at most this many bytes
#: (digits, CIFAR-size splits); a larger split is read again on every pass, never held whole.
CACHE_BYTES = 512 * 2**20


class ValidationBatches:
    """The validation split (or a fixed subset of it) in a fixed shuffled order, read batch by batch.

    Every pass yields the same batches in the same order, so a count stopped early has seen
    every class and two trials see the same images; the order is the one a seeded shuffling
    DataLoader gives, read through a DataLoader over those indices (``workers`` processes,
    pinned memory for a CUDA model, prefetching), so a split larger than memory is never held
    whole. A split that fits in ``cache_bytes`` is kept after its first full pass, so small
    studies read their data once.

    ``images``: score on this many images of the split (None: all), a fixed subset drawn from
    the seed, stratified by class when the dataset says its labels without reading its samples
    (a ``targets`` attribute, as torchvision's datasets have, also through a ``Subset``).
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        seed: int,
        *,
        images: int | None = None,
        workers: int = 0,
        pin_memory: bool = False,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.dataset, self.collate = data.val, dataset_task(data).collate
        self.batch_size, self.workers, self.pin_memory, self.cache_bytes = batch_size, workers, pin_memory, cache_bytes
        self.indices: list[int] = shuffled_order(len(data.val), seed)
        self._kept: list | None = None
        if images is not None and images < len(self.indices):
            self.indices = _subset(self.indices, images, _cheap_labels(self.dataset))

    def subset(self, images: int) -> ValidationBatches:
        """These batches cut to ``images`` of their images, drawn as ``images=`` draws them (from this order,
        so the split is not shuffled again); themselves when they hold no more."""
        if images >= len(self.indices):
            return self
        cut = copy.copy(self)
        cut.indices, cut._kept = _subset(self.indices, images, _cheap_labels(self.dataset)), None
        return cut

    @property
    def images(self) -> int:
        """How many validation images a full pass scores."""
        return len(self.indices)

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, index: int) -> Any:
        """Batch ``index`` of a pass (read up to it, unless the batches are kept): for code written for the
        list of batches a study held before; iterate to read them all."""
        if self._kept is not None:
            return self._kept[index]
        count = len(self)
        position = index + count if index < 0 else index
        if not 0 <= position < count:
            raise IndexError(f"batch {index} of {count}")
        for number, batch in enumerate(self):
            if number == position:
                return batch
        raise IndexError(f"batch {index} of {count}")

    def __iter__(self) -> Iterator:
        if self._kept is not None:
            yield from self._kept
            return
        loader = DataLoader(
            Subset(self.dataset, self.indices),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if self.workers else None,
        )
        kept: list | None = []
        size = 0
        for batch in loader:
            if kept is not None:
                size += _bytes(batch)
                if size <= self.cache_bytes:
                    kept.append(batch)
                else:
                    kept = None
            yield batch
        if kept is not None:  # a full pass that fits: the next ones read memory
            self._kept = kept


def shuffled_order(n: int, seed: int) -> list[int]:
    """The order in which a DataLoader shuffling ``n`` samples with a generator seeded ``seed`` reads them
    (asked of such a DataLoader over the indices, so it is torch's own, in every version)."""
    loader = DataLoader(range(n), batch_size=65536, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return [int(i) for batch in loader for i in batch.tolist()]


def validation_batches(data: Any, batch_size: int, seed: int, **options: Any) -> ValidationBatches:
    """The study's validation batches (:class:`ValidationBatches`; ``options``: its keyword arguments)."""
    return ValidationBatches(data, batch_size, seed, **options)


def _cheap_labels(dataset: Any) -> list | None:
    """The class of each sample when the dataset says them without loading samples, else None."""
    if isinstance(dataset, Subset):
        parent = _cheap_labels(dataset.dataset)
        return None if parent is None else [parent[i] for i in dataset.indices]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    labels = targets.tolist() if isinstance(targets, torch.Tensor) else list(targets)
    if len(labels) != len(dataset) or not all(isinstance(v, int) for v in labels[:100]):
        return None
    return labels


def _subset(order: list[int], images: int, labels: list | None) -> list[int]:
    """``images`` of the shuffled ``order``: its first ones, or with ``labels`` each class in proportion to
    its share (largest remainders), in the order's order."""
    if labels is None:
        return order[:images]
    by_class: dict[Any, list[int]] = {}
    for index in order:
        by_class.setdefault(labels[index], []).append(index)
    shares = {c: images * len(members) / len(order) for c, members in by_class.items()}
    counts = {c: int(share) for c, share in shares.items()}
    for c in sorted(shares, key=lambda c: (counts[c] - shares[c], str(c)))[: images - sum(counts.values())]:
        counts[c] += 1
    chosen = {i for c, members in by_class.items() for i in members[: counts[c]]}
    return [i for i in order if i in chosen]


def _bytes(batch: Any) -> int:
    """The bytes the tensors of a batch (nested in tuples, lists and dicts) hold."""
    if isinstance(batch, torch.Tensor):
        return batch.element_size() * batch.nelement()
    if isinstance(batch, dict):
        return sum(_bytes(v) for v in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(_bytes(v) for v in batch)
    return 0
