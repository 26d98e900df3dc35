"""Train a small CNN on scikit-learn's digits, prune it at uniform rates, and compare.

    python examples/prune_digits.py

Shows the pruning engine on its own: one rate for every group, BatchNorm
statistics recalibrated on a few training batches, accuracy measured on the
validation split. `autoprune search` builds on exactly these calls and searches a
rate and an importance per group instead of one for all.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch.utils.data import DataLoader

import autoprune
from autoprune.metrics import accuracy
from autoprune.searcher import recalibrate_batchnorm


def main() -> None:
    data = autoprune.create_dataset("digits")
    model = autoprune.create_model("small_cnn", num_classes=data.num_classes, in_channels=1)
    autoprune.train(model, data, autoprune.TrainSettings(epochs=15), seed=0)
    loader = DataLoader(data.train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
    calibration = list(itertools.islice(loader, 20))
    val = list(DataLoader(data.val, batch_size=256))
    x = data.val[0][0].unsqueeze(0)
    base, base_acc = autoprune.measure(model, x), accuracy(model, val)
    print(
        f"baseline small_cnn on digits: {base_acc:.2f}% val accuracy, "
        f"{base['flops']:,} flops, {base['params']:,} params"
    )
    print(f"{'rate':>5} {'importance':>10} {'val acc':>8} {'drop':>6} {'flops':>8} {'params':>8}")
    for rate, importance in itertools.product((0.25, 0.5, 0.75), ("l1", "fpgm", "random")):
        pruned = autoprune.prune(copy.deepcopy(model), x, rate, importance=importance)
        acc = accuracy(recalibrate_batchnorm(pruned, calibration), val)
        size = autoprune.measure(pruned, x)
        print(
            f"{rate:5.2f} {importance:>10} {acc:7.2f}% {base_acc - acc:6.2f} "
            f"{base['flops'] / size['flops']:7.2f}x {base['params'] / size['params']:7.2f}x"
        )


if __name__ == "__main__":
    main()
