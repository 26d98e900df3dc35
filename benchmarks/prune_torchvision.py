"""Prune torchvision classifiers at one uniform rate and check each result.

    python benchmarks/prune_torchvision.py [--rate 0.3] [--size 224] [NAME_PATTERN ...]

For every matching ``torchvision/<name>`` model (randomly initialized), prints
parameters and FLOPs before and after ``autoprune.prune``, whether the output
shape is unchanged, and how many groups were left unpruned (with why).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys

import torch
from common import survey

import autoprune

FAMILIES = [
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "densenet121",
    "googlenet",
    "inception_v3",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "shufflenet_v2_x1_0",
    "squeezenet1_0",
    "squeezenet1_1",
    "vgg11_bn",
    "alexnet",
    "convnext_tiny",
    "mnasnet0_5",
    "vit_b_16",
    "swin_t",
    "swin_v2_t",
    "maxvit_t",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="model name patterns (default: one model per family)")
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--all", action="store_true", help="every torchvision classifier")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    names = autoprune.list_models("torchvision/*", task="classification")
    if args.patterns:
        names = [n for n in names if any(fnmatch.fnmatch(n.split("/", 1)[1], p) for p in args.patterns)]
    elif not args.all:
        names = [f"torchvision/{n}" for n in FAMILIES]
    failures = 0
    print(f"{'model':34} {'params':>9} {'pruned':>9} {'ratio':>6} {'flops x':>7} {'shape':>6} {'skipped':>7} {'s':>5}")
    for name in names:
        size = 299 if "inception" in name else args.size
        row = survey(name, (1, 3, size, size), args.rate)
        failures += not row["ok"]
        if "params" not in row:
            print(f"{name:34} FAILED {row['reason'][:200]}", flush=True)
            continue
        print(
            f"{name:34} {row['params'] / 1e6:8.2f}M {row['pruned_params'] / 1e6:8.2f}M "
            f"{row['pruned_params'] / row['params']:6.2f} {row['flops_reduction']:7.2f} "
            f"{'same' if row['same_shape'] else 'DIFF':>6} {row['unprunable']:7d} {row['seconds']:5.1f}",
            flush=True,
        )
    print(f"{len(names) - failures} of {len(names)} pruned with the output shape unchanged")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
