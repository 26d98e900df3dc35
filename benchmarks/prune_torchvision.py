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
import time

import torch

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
        x = torch.randn(1, 3, size, size)
        t0 = time.perf_counter()
        try:
            model = autoprune.create_model(name, num_classes=1000).eval()
            before = autoprune.measure(model, x)
            with torch.no_grad():
                shape = model(x).shape
            skipped = autoprune.unprunable_groups(model, x)
            autoprune.prune(model, x, args.rate)
            after = autoprune.measure(model, x)
            with torch.no_grad():
                same = model(x).shape == shape
            ok = same and after["params"] < before["params"]
            failures += not ok
            print(
                f"{name:34} {before['params'] / 1e6:8.2f}M {after['params'] / 1e6:8.2f}M "
                f"{after['params'] / before['params']:6.2f} {before['flops'] / max(after['flops'], 1):7.2f} "
                f"{'same' if same else 'DIFF':>6} {len(skipped):7d} {time.perf_counter() - t0:5.1f}",
                flush=True,
            )
        except Exception as exc:  # noqa: BLE001 - report and go on: this is a survey
            failures += 1
            print(f"{name:34} FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)
    print(f"{len(names) - failures} of {len(names)} pruned with the output shape unchanged")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
