"""Train a small CNN on scikit-learn's digits, prune it at several rates, and compare.

    python examples/prune_digits.py

Shows the pruning engine on its own: one uniform rate per run, BatchNorm
statistics recalibrated on a few training batches, accuracy measured on the
validation split. `autoprune search` builds on exactly these calls and searches a
rate and an importance per layer instead of one for all.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import autoprune


def accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return 100.0 * correct / total


def recalibrate_bn(model, loader, batches: int = 20) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i == batches:
                break
            model(x)
    model.eval()


def main() -> None:
    torch.manual_seed(0)
    data = autoprune.create_dataset("digits")
    train = DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(data.val, batch_size=256)
    model = autoprune.create_model("small_cnn", num_classes=data.num_classes, in_channels=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    for _ in range(15):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    x = torch.randn(1, *data.input_shape)
    base = autoprune.measure(model, x)
    base_acc = accuracy(model, val)
    print(f"baseline small_cnn on digits: {base_acc:.2f}% val accuracy, "
          f"{base['flops']:,} flops, {base['params']:,} params (trained in {time.perf_counter() - start:.0f}s)")
    print(f"{'rate':>5} {'importance':>10} {'val acc':>8} {'drop':>6} {'flops':>8} {'params':>8}")
    for rate in (0.25, 0.5, 0.75):
        for importance in ("l1", "fpgm", "random"):
            pruned = autoprune.prune(copy.deepcopy(model), x, rate, importance=importance)
            recalibrate_bn(pruned, train)
            acc = accuracy(pruned, val)
            size = autoprune.measure(pruned, x)
            print(f"{rate:5.2f} {importance:>10} {acc:7.2f}% {base_acc - acc:6.2f} "
                  f"{base['flops'] / size['flops']:7.2f}x {base['params'] / size['params']:7.2f}x")


if __name__ == "__main__":
    main()
