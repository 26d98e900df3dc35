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
from torch.utils.data import DataLoader, Dataset, Subset

from .zoo import dataset_task


def calibration_batches(
    data: Any, count: int, batch_size: int, seed: int, *, workers: int = 0, pin_memory: bool = False
) -> CalibrationBatches:
    """The fixed training batches every trial recalibrates BatchNorm on (:class:`CalibrationBatches`)."""
    return CalibrationBatches(data, count, batch_size, seed, workers=workers, pin_memory=pin_memory)


#: Validation batches kept in memory after their first full pass when they take at most this many bytes
#: (digits, CIFAR-size splits); a larger split is read again on every pass, never held whole.
CACHE_BYTES = 512 * 2**20


class _StreamedBatches:
    """Batches of ``dataset`` at fixed ``indices``, read through a DataLoader on every pass (``workers``
    processes, pinned memory, prefetching) and kept after a full pass that fits in ``cache_bytes``."""

    def __init__(
        self, dataset: Any, collate: Any, batch_size: int, workers: int, pin_memory: bool, cache_bytes: int
    ) -> None:
        self.dataset, self.collate, self.batch_size = dataset, collate, batch_size
        self.workers, self.pin_memory, self.cache_bytes = workers, pin_memory, cache_bytes
        self.indices: list[int] = []
        self._kept: list | None = None
        self._too_large = False  # a full pass did not fit: later passes keep nothing on the way

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def _position(self, index: int) -> int:
        """``index`` counted from the first batch (a negative one from the end), checked to be a batch."""
        count = len(self)
        position = index + count if index < 0 else index
        if not 0 <= position < count:
            raise IndexError(f"batch {index} of {count}")
        return position

    def _samples(self) -> Dataset:
        return Subset(self.dataset, self.indices)

    def _generator(self) -> torch.Generator | None:
        return None

    def __iter__(self) -> Iterator:
        if self._kept is not None:
            yield from self._kept
            return
        loader = DataLoader(
            self._samples(),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if self.workers else None,
            generator=self._generator(),
        )
        yield from _kept_if_small(self, loader)


class ValidationBatches(_StreamedBatches):
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
        super().__init__(data.val, dataset_task(data).collate, batch_size, workers, pin_memory, cache_bytes)
        self.indices = shuffled_order(len(data.val), seed)
        if images is not None and images < len(self.indices):
            self.indices = _subset(self.indices, images, _cheap_labels(self.dataset))

    def subset(self, images: int) -> ValidationBatches:
        """These batches cut to ``images`` of their images, drawn as ``images=`` draws them (from this order,
        so the split is not shuffled again); themselves when they hold no more."""
        if images >= len(self.indices):
            return self
        cut = copy.copy(self)
        cut.indices, cut._kept = _subset(self.indices, images, _cheap_labels(self.dataset)), None
        cut._too_large = False
        return cut

    @property
    def images(self) -> int:
        """How many validation images a full pass scores."""
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        """Batch ``index`` of a pass (read up to it, unless the batches are kept): for code written for the
        list of batches a study held before; iterate to read them all."""
        if self._kept is not None:
            return self._kept[index]
        position = self._position(index)
        for number, batch in enumerate(self):
            if number == position:
                return batch
        raise IndexError(f"batch {index} of {len(self)}")


class CalibrationBatches(_StreamedBatches):
    """The ``count`` fixed training batches every trial recalibrates BatchNorm on, read batch by batch.

    The same batches for the same seed, in any process and with any number of DataLoader
    ``workers``: the images are the first ``count * batch_size`` of the training split in the
    order a seeded shuffling DataLoader reads it, and random augmentations run, sample by
    sample, under torch's, Python's and NumPy's generators seeded from ``seed`` and the sample's
    place (the caller's generator states are left as they were). Batches that fit in
    ``cache_bytes`` are kept after their first pass; larger ones (high-resolution images, many
    batches) are read again on every pass, never held whole. ``calibration[:n]`` is the first
    ``n`` batches, ``calibration[i]`` one batch, as on the list a study held before.
    """

    def __init__(
        self,
        data: Any,
        count: int,
        batch_size: int,
        seed: int,
        *,
        workers: int = 0,
        pin_memory: bool = False,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        super().__init__(data.train, dataset_task(data).collate, batch_size, workers, pin_memory, cache_bytes)
        self.seed = seed
        self.indices = shuffled_order(len(data.train), seed)[: count * batch_size]
        self._offset = 0  # where these batches start among the study's (a slice's)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError(f"calibration batches are sliced without a step, got step {step}")
            return self._between(start, max(start, stop))
        position = self._position(index)
        if self._kept is not None:
            return self._kept[position]
        return next(iter(self._between(position, position + 1)))

    def _between(self, start: int, stop: int) -> CalibrationBatches:
        """Batches ``start`` to ``stop`` (exclusive), as batches of their own: each is the batch it is here."""
        cut = copy.copy(self)
        cut.indices = self.indices[start * self.batch_size : stop * self.batch_size]
        cut._offset = self._offset + start * self.batch_size
        cut._kept = None if self._kept is None else self._kept[start:stop]
        cut._too_large = False
        return cut

    def _samples(self) -> Dataset:
        return _SeededSamples(self.dataset, self.indices, self.seed, self._offset)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)


class _SeededSamples(Dataset):
    """``dataset[indices[i]]`` read under generators seeded from ``seed`` and ``offset + i``, so an augmented
    sample is the same in any process and any worker, whatever was drawn before it."""

    def __init__(self, dataset: Any, indices: list[int], seed: int, offset: int) -> None:
        self.dataset, self.indices, self.seed, self.offset = dataset, indices, seed, offset

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        sample_seed = (self.seed * 1_000_003 + self.offset + i) % 2**32
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            try:
                return self.dataset[self.indices[i]]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


def _kept_if_small(batches: _StreamedBatches, loader: DataLoader) -> Iterator:
    """The loader's batches; ``batches._kept`` holds them after a full pass that fits ``batches.cache_bytes``.
    Once a pass has not fitted, later passes keep nothing on the way (they would hold up to ``cache_bytes``
    of batches only to drop them)."""
    kept: list | None = None if batches._too_large else []
    size = 0
    for batch in loader:
        if kept is not None:
            size += _bytes(batch)
            if size <= batches.cache_bytes:
                kept.append(batch)
            else:
                kept, batches._too_large = None, True
        yield batch
    if kept is not None:  # a full pass that fits: the next ones read memory
        batches._kept = kept


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
