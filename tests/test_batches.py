"""The study's fixed batches: the validation split streamed in one order, a seeded subset of it, and a split no
list in memory could hold."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset

import autoprune
from autoprune.batches import ValidationBatches, validation_batches
from autoprune.data import DataSplits
from autoprune.zoo import dataset_task


class LazyImages(Dataset):
    """``n`` 1x8x8 images generated from their index when read (none is stored), class ``index % 10``; counts
    its reads. ``targets``: expose the labels as torchvision's datasets do."""

    def __init__(self, n: int, targets: bool = False) -> None:
        self.n, self.reads = n, 0
        if targets:
            self.targets = [i % 10 if i % 5 else 0 for i in range(n)]  # class 0 twice as common, no class 5

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        self.reads += 1
        image = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(index))
        label = self.targets[index] if hasattr(self, "targets") else index % 10
        return image, label


def _splits(val: Dataset, digits) -> DataSplits:
    return DataSplits(digits.train, val, None, num_classes=10, input_shape=(1, 8, 8))


def test_every_pass_yields_the_batches_a_seeded_shuffling_loader_gives_once(digits):
    """The order of the list the study held before, so a study's trials are unchanged; streamed on every pass
    when the split does not fit in the cache, kept after the first pass when it does."""
    loader = DataLoader(
        digits.val,
        batch_size=64,
        shuffle=True,
        collate_fn=dataset_task(digits).collate,
        generator=torch.Generator().manual_seed(3),
    )
    expected = list(loader)
    for cache_bytes in (0, 10**9):
        batches = ValidationBatches(digits, 64, 3, cache_bytes=cache_bytes)
        assert len(batches) == len(expected) and batches.images == len(digits.val)
        for _ in range(2):
            passed = list(batches)
            assert len(passed) == len(expected)
            assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(passed, expected))
        assert (batches._kept is None) == (cache_bytes == 0)


def test_a_pass_stopped_early_keeps_nothing_and_the_next_pass_starts_from_the_first_batch(digits):
    batches = ValidationBatches(digits, 32, 0)
    first = next(iter(batches))
    assert batches._kept is None
    again = next(iter(batches))
    assert torch.equal(first[0], again[0])
    last = list(ValidationBatches(digits, 32, 0, cache_bytes=0))[-1]
    assert torch.equal(batches[0][0], first[0]) and torch.equal(batches[-1][0], last[0])  # as the list was indexed
    with pytest.raises(IndexError):
        batches[len(batches)]


def test_val_images_is_a_seeded_subset_stratified_by_class_when_the_dataset_has_targets(digits):
    val = LazyImages(1000, targets=True)
    batches = ValidationBatches(_splits(val, digits), 50, 0, images=100)
    assert (
        batches.images == 100 and batches.indices == ValidationBatches(_splits(val, digits), 50, 0, images=100).indices
    )
    counts = Counter(val.targets[i] for i in batches.indices)
    shares = Counter(val.targets)
    assert all(abs(counts[c] - 100 * shares[c] / 1000) < 1 for c in shares)  # each class in proportion
    assert counts[0] == 20 and counts[5] == 0  # 200 of 1000 images are class 0, none class 5
    other = ValidationBatches(_splits(val, digits), 50, 1, images=100)
    assert other.indices != batches.indices  # another seed, another subset
    through_subset = Subset(val, list(range(0, 1000, 2)))
    assert ValidationBatches(_splits(through_subset, digits), 50, 0, images=50).images == 50
    plain = LazyImages(1000)  # no labels to stratify by: the first images of the shuffled order
    full = ValidationBatches(_splits(plain, digits), 50, 0)
    assert ValidationBatches(_splits(plain, digits), 50, 0, images=100).indices == full.indices[:100]
    assert plain.reads == 0  # nothing read to choose them


def test_a_search_on_a_split_no_list_could_hold_reads_only_the_images_it_scores(digits):
    """Two million validation images generated on demand (as a list of tensors they would take 2 GB, as
    ImageNet's take 30): a search with ``val_images`` reads only its subset, whatever the split's size."""
    val = LazyImages(2_000_000)
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    model = autoprune.train(model, digits, autoprune.TrainSettings(epochs=1), seed=0)
    result = autoprune.search(
        model,
        _splits(val, digits),
        max_accuracy_drop=50.0,
        trials=2,
        val_images=256,
        uniform_starts=(),
        calibration_batches=1,
        warm_start="none",
    )
    assert len(result.record.completed()) == 2
    assert all(result.record.value(t, "evaluated") <= 256 for t in result.record.completed())
    assert val.reads <= 2 * 256 + 8  # the subset (read once, then kept) and a few single examples, not 2,000,000


def test_validation_batches_takes_the_reading_options(digits):
    batches = validation_batches(digits, 128, 0, workers=1, images=100)
    assert batches.workers == 1 and sum(len(targets) for _, targets in batches) == 100


@pytest.mark.parametrize("bad", [-1, 1.5, "all"])
def test_val_images_and_data_workers_take_non_negative_integers(bad):
    with pytest.raises(autoprune.AutopruneError, match="val_images must be an integer >= 0"):
        autoprune.SearchSettings(max_accuracy_drop=1.0, val_images=bad)
    with pytest.raises(autoprune.AutopruneError, match="data_workers must be an integer >= 0"):
        autoprune.SearchSettings(max_accuracy_drop=1.0, data_workers=bad)


def test_a_subset_of_the_batches_is_the_subset_images_draws_without_shuffling_again(digits):
    val = LazyImages(1000, targets=True)
    full = ValidationBatches(_splits(val, digits), 50, 0)
    assert full.subset(100).indices == ValidationBatches(_splits(val, digits), 50, 0, images=100).indices
    assert full.subset(1000) is full and len(full.indices) == 1000  # the whole split: itself, unchanged


class AugmentedLazy(LazyImages):
    """LazyImages with an augmentation drawing from torch's, Python's and NumPy's global generators."""

    def __getitem__(self, index: int):
        import random

        import numpy as np

        image, label = super().__getitem__(index)
        return image + torch.rand(1) + random.random() + float(np.random.rand()), label


def test_calibration_batches_are_the_same_streamed_or_kept_and_with_any_number_of_workers(digits):
    """data_workers may change on resume: the calibration batches, augmentations included, must not."""
    from autoprune.batches import CalibrationBatches

    splits = DataSplits(AugmentedLazy(300), digits.val, None, num_classes=10, input_shape=(1, 8, 8))
    kept = CalibrationBatches(splits, 3, 16, seed=5)
    reference = list(kept)
    assert len(reference) == 3 and kept._kept is not None
    streamed = CalibrationBatches(splits, 3, 16, seed=5, cache_bytes=0, workers=2)
    for _ in range(2):
        again = list(streamed)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(again, reference))
    assert streamed._kept is None
    # the images are the first of the seeded shuffled order, as the loader the study used before read them
    order = DataLoader(range(300), batch_size=300, shuffle=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(reference[0][1], (next(iter(order))[:16] % 10))
    assert not torch.equal(reference[0][0], next(iter(CalibrationBatches(splits, 1, 16, seed=6)))[0])


def test_calibration_slices_and_indices_are_the_batches_of_the_whole(digits):
    """Code slices the first batches (``calibration[:n]``) and indexes one: each is the same batch either way,
    read without the others when they are not kept."""
    from autoprune.batches import CalibrationBatches

    data = AugmentedLazy(400)
    splits = DataSplits(data, digits.val, None, num_classes=10, input_shape=(1, 8, 8))
    whole = list(CalibrationBatches(splits, 4, 10, seed=0))
    streamed = CalibrationBatches(splits, 4, 10, seed=0, cache_bytes=0)
    data.reads = 0
    first_two = list(streamed[:2])
    assert data.reads == 20 and len(streamed[:2]) == 2 and len(streamed[:99]) == 4
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first_two, whole[:2]))
    assert torch.equal(streamed[2][0], whole[2][0]) and torch.equal(streamed[-1][0], whole[3][0])
    assert torch.equal(list(streamed[1:3])[1][0], whole[2][0])
    with pytest.raises(IndexError):
        streamed[4]
    with pytest.raises(IndexError, match="step"):
        streamed[::2]


def test_a_split_too_large_to_keep_collects_nothing_on_the_next_passes(digits, monkeypatch):
    """A pass that did not fit in the cache used to collect up to cache_bytes of batches on every later pass too."""
    import autoprune.batches as module

    batches = ValidationBatches(digits, 32, 0, cache_bytes=5 * 32 * 64 * 4)  # five batches' worth of images
    first = list(batches)
    assert batches._kept is None and batches._too_large
    sized = []
    monkeypatch.setattr(module, "_bytes", lambda batch: sized.append(batch) or 0)
    again = list(batches)
    assert len(again) == len(first) and not sized and batches._kept is None  # nothing weighed, nothing kept
    assert not batches.subset(64)._too_large  # a subset that may fit is tried again
