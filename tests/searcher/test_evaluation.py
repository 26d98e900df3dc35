"""How trials are scored: the same calibration batches in every process, whatever the global RNG."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import autoprune
from autoprune.searcher import calibration_batches


class Augmented(Dataset):
    """A training split with a random augmentation drawn from the global generators."""

    def __init__(self, n: int = 64) -> None:
        self.x = torch.zeros(n, 1, 4, 4)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        noise = torch.rand(1, 4, 4) + random.random() + float(np.random.rand())
        return self.x[i] + noise, i % 2


def test_calibration_batches_of_an_augmented_dataset_do_not_depend_on_the_global_rng():
    """Regression: augmentations drew from the global generator, so a rebuild or a second worker
    recalibrated on other images than the trial did."""
    data = autoprune.DataSplits(Augmented(), Augmented(8), None, 2, (1, 4, 4))
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    first = calibration_batches(data, 3, 16, seed=0)
    after_first = torch.rand(1)
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    second = calibration_batches(data, 3, 16, seed=0)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    other_seed = calibration_batches(data, 3, 16, seed=1)
    assert not torch.equal(first[0][0], other_seed[0][0])
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after_first)  # the caller's generator state is left alone


def test_prune_only_that_matches_no_group_says_it_takes_prefixes_when_given_a_pattern():
    """Regression (issue 23): ``prune_only = ["features*"]`` reads as a pattern, and matched nothing."""
    from autoprune.searcher.evaluation import searched_groups

    groups = ["features.0", "features.3", "classifier.1"]
    assert searched_groups(groups, ("features",)) == ["features.0", "features.3"]
    with pytest.raises(autoprune.AutopruneError) as err:
        searched_groups(groups, ("features*",))
    assert str(err.value) == (
        "search.prune_only ['features*'] matches none of the model's 3 prunable groups (it takes module-name "
        "prefixes, not patterns); their names start with: classifier, features"
    )
    with pytest.raises(autoprune.AutopruneError, match=r"3 prunable groups; their names start with"):
        searched_groups(groups, ("head",))
