"""Peak memory of a search as its validation split grows, and the per-trial cost of streaming the split.

    python benchmarks/bench_memory.py [--doc docs/benchmarks.md] [--limit-mib 1024] [--sizes 1 4 20]
                                      [--trials 2] [--plans 10] [--skip-memory] [--skip-wall]

**Memory.** Real searches (:func:`autoprune.search`, each in its own subprocess) on
validation splits generated on demand (:class:`LazySplit`: 3x256x256 float32 images,
768 KiB each, a fresh tensor per read, as a decoded JPEG is), of 1x, 4x and 20x
``--limit-mib``; the child reports its peak RSS (``ru_maxrss``, also of its DataLoader
workers) and tracemalloc's peak (Python objects only: tensor storage is not traced).
The largest split is searched again with the memory limit enforced (``RLIMIT_DATA`` set
to what the process holds after its setup plus the limit), streamed and with the
validation batches forced into memory, which must fail.

**Wall time.** On the Fashion-MNIST benchmark study (its untrained ResNet-20: the
benchmark's baseline training takes 20 minutes here, and the time of a trial does not
depend on the weights), the same random plans are scored as a trial scores them
(prune, recalibrate, evaluate with the study's early stop, measure) with the
validation batches kept in memory (the default for its 10,000 images) and read again
on every pass (``cache_bytes=0``) with 0 and 2 DataLoader workers, the three paths
alternated plan by plan; the medians and the ratio streamed / in-memory are printed.

The section between the memory markers of the document is replaced; the rest is kept.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import multiprocessing
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import torch
from common import measured_line, write_section
from torch import nn
from torch.utils.data import Dataset

BEGIN, END = "<!-- memory: written by benchmarks/bench_memory.py -->", "<!-- /memory -->"
SHAPE = (3, 256, 256)
IMAGE_BYTES = 4 * SHAPE[0] * SHAPE[1] * SHAPE[2]
MIB = 2**20
STUDY = "studies/bench-fashion-mnist.toml"


class LazySplit(Dataset):
    """``n`` images of ``shape`` made from their index when read (nothing is stored): a fresh float32 tensor
    whose value says its class (``index % 10``), so a split of any size costs no memory until it is held.
    :attr:`reads` counts the images read, by this process and the DataLoader workers it forks."""

    def __init__(self, n: int, shape: tuple[int, ...] = SHAPE) -> None:
        self.n, self.shape, self._reads = n, shape, multiprocessing.Value("q", 0)
        self.targets = [i % 10 for i in range(n)]  # the labels without reading a sample, as torchvision's

    @property
    def reads(self) -> int:
        return self._reads.value

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.n:
            raise IndexError(f"image {index} of {self.n}")
        with self._reads.get_lock():
            self._reads.value += 1
        label = index % 10
        return torch.full(self.shape, label / 10 + (index % 97) / 1000), label


def images_for(mib: float) -> int:
    """How many :data:`SHAPE` images hold ``mib`` MiB as tensors."""
    return max(1, round(mib * MIB / IMAGE_BYTES))


def wide_image_cnn() -> nn.Module:
    """A small CNN for large images: average-pooled to 32x32 first (reading every pixel), then two convolutions
    with BatchNorm, so a pass over gigabytes of images stays quick on two cores."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.AvgPool2d(8),
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure (VmRSS, VmData) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def limit_data(extra_bytes: int) -> int:
    """Let this process (and the DataLoader workers it starts) map at most ``extra_bytes`` more private writable
    memory than it holds now (``RLIMIT_DATA``, which malloc and torch's CPU allocator are both held to); the
    limit set, in bytes."""
    limit = _status_kib("VmData") * 1024 + extra_bytes
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    return limit


def child(images: int, trials: int, cache_bytes: int | None, limit_mib: int | None, workers: int) -> dict:
    """One search on a split of ``images`` lazy images (in this process); what it held at its peak.
    ``cache_bytes``: the validation batches' cache (None: autoprune's default, ``CACHE_BYTES``)."""
    import autoprune
    from autoprune import batches
    from autoprune.data import DataSplits
    from autoprune.searcher import evaluation

    if cache_bytes is not None:  # KEEP: the in-memory path, every batch kept after its first pass
        evaluation.validation_batches = functools.partial(batches.validation_batches, cache_bytes=cache_bytes)
    val = LazySplit(images)
    data = DataSplits(LazySplit(64), val, None, num_classes=10, input_shape=SHAPE)
    model = wide_image_cnn()
    with torch.no_grad():
        model(torch.zeros(2, *SHAPE))  # the allocator and threads set up before the footprint is read
    setup_kib = _status_kib("VmRSS")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # importing torch ran a subprocess already
    limit = limit_data(limit_mib * MIB) if limit_mib else None
    tracemalloc.start()
    started = time.perf_counter()
    row: dict[str, Any] = {"images": images, "split_mib": images * IMAGE_BYTES / MIB}
    try:
        result = autoprune.search(
            model,
            data,
            max_accuracy_drop=100.0,  # every plan feasible: no trial stops early, each reads the whole split
            trials=trials,
            batch_size=32,
            calibration_batches=1,
            uniform_starts=(),
            warm_start="none",
            data_workers=workers,
        )
        row.update(ok=True, completed=len(result.record.completed()))
    except (MemoryError, RuntimeError) as exc:  # the allocation the limit refused
        row.update(ok=False, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
    row.update(
        seconds=time.perf_counter() - started,
        passes=val.reads / images,
        setup_mib=setup_kib / 1024,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        workers_peak_rss_mib=_above(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024,
        tracemalloc_peak_mib=tracemalloc.get_traced_memory()[1] / MIB,
        limit_mib=None if limit is None else limit / MIB,
    )
    return row


def _above(peak_kib: int, before_kib: int) -> int:
    """A children's peak RSS, 0 when no child started since ``before_kib`` was read went above it."""
    return peak_kib if peak_kib > before_kib else 0


def run_child(images: int, trials: int, limit_mib: int, cache_bytes: int | None = None, workers: int = 0) -> dict:
    """:func:`child` in a fresh Python process, so that each search's peak is its own."""
    options = {
        "images": images,
        "trials": trials,
        "cache_bytes": cache_bytes,
        "limit_mib": limit_mib,
        "workers": workers,
    }
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(options)], capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        tail = " ".join(done.stderr.split())[-300:]
        return {**options, "ok": False, "error": f"the child exited {done.returncode}: {tail}"}
    row = json.loads(lines[-1])
    print(f"memory: {json.dumps(row)}", file=sys.stderr)
    return row


#: A cache no split exceeds: the validation batches kept in memory whatever their size, as a list held them.
KEEP = 2**62


def memory_rows(limit_mib: int, sizes: list[float], trials: int) -> list[dict]:
    """Searches under the limit: at each size as autoprune streams it, the largest also with 2 DataLoader workers,
    with no cache at all (``cache_bytes=0``) and with every batch kept (which must fail)."""
    rows = []
    for size in sizes:
        rows.append({"run": f"{size:g}x, default", **run_child(images_for(size * limit_mib), trials, limit_mib)})
    largest, top = images_for(max(sizes) * limit_mib), f"{max(sizes):g}x"
    rows.append({"run": f"{top}, default, 2 workers", **run_child(largest, trials, limit_mib, workers=2)})
    rows.append({"run": f"{top}, cache_bytes=0", **run_child(largest, trials, limit_mib, cache_bytes=0)})
    rows.append({"run": f"{top}, all kept", **run_child(largest, trials, limit_mib, cache_bytes=KEEP)})
    return rows


def random_plans(groups: list[str], importances: tuple[str, ...], count: int, seed: int = 0) -> list:
    """``count`` plans, each group at its own rate in [0, 0.5] with one of ``importances``."""
    from autoprune.plan import Plan

    rng = random.Random(seed)
    return [
        Plan(
            rates={g: round(rng.uniform(0, 0.5), 2) for g in groups},
            methods={g: rng.choice(importances) for g in groups},
        )
        for _ in range(count)
    ]


def wall_rows(plans: int) -> dict:
    """The same plans scored through the three ways of reading the validation split, alternated plan by plan."""
    from autoprune import batches
    from autoprune.baseline import build_model
    from autoprune.searcher import Evaluator, evaluation
    from autoprune.settings import load_study_file
    from autoprune.zoo import create_dataset

    study_file = load_study_file(STUDY)
    data = create_dataset(study_file.dataset, **study_file.dataset_params)
    model = build_model(study_file, data)
    paths = {
        "in memory": ({}, 0),
        "streamed, 0 workers": ({"cache_bytes": 0}, 0),
        "streamed, 2 workers": ({"cache_bytes": 0}, 2),
    }
    evaluators = {}
    original = evaluation.validation_batches
    try:
        for name, (options, workers) in paths.items():
            evaluation.validation_batches = functools.partial(batches.validation_batches, **options)
            settings = study_file.settings.replace(data_workers=workers)
            evaluators[name] = Evaluator.build(copy.deepcopy(model), data, settings)
    finally:
        evaluation.validation_batches = original
    names = list(evaluators)
    kept = {n: evaluators[n].val_batches._kept is not None for n in names}
    chosen = random_plans(evaluators[names[0]].groups, study_file.settings.importances, plans + 1)
    times: dict[str, list[float]] = {n: [] for n in names}
    evals: dict[str, list[float]] = {n: [] for n in names}
    seen: dict[str, list[int]] = {n: [] for n in names}
    for number, plan in enumerate(chosen):
        for name in names[number % 3 :] + names[: number % 3]:  # each path first, second and third in turn
            started = time.perf_counter()
            metrics = evaluators[name].evaluate(plan)
            if number:  # the first plan warms every path up (scores computed, workers' imports)
                times[name].append(time.perf_counter() - started)
                evals[name].append(metrics["eval_seconds"])
                seen[name].append(int(metrics["evaluated"]))
            print(f"wall: plan {number} {name}: {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return {
        "plans": plans,
        "images": len(data.val),
        "kept": kept,
        "trial": {n: statistics.median(times[n]) for n in names},
        "eval": {n: statistics.median(evals[n]) for n in names},
        "evaluated": {n: statistics.median(seen[n]) for n in names},
        # each plan's time on a path over its time in memory, in the same round: drift of the machine's load cancels
        "paired": {n: statistics.median(t / m for t, m in zip(times[n], times[names[0]])) for n in names},
    }


def _mib(value: float) -> str:
    return f"{value:.0f} MiB" if value else "-"


def section(memory: list[dict] | None, wall: dict | None, limit_mib: int, shared: bool) -> str:
    lines = [BEGIN, "## Memory: a validation split larger than memory", ""]
    if memory:
        trials = max(r.get("completed", 0) for r in memory)
        smallest, largest = (f(r["split_mib"] for r in memory) / limit_mib for f in (min, max))
        lines += [
            "Written by `make bench-memory` (`python benchmarks/bench_memory.py`). Each row is one",
            f"`autoprune.search` in its own process ({trials} trials, `max_accuracy_drop = 100` so that no trial",
            "stops early and every pass reads the whole split; batch 32; an untrained small CNN that",
            "average-pools 3x256x256 images to 32x32) on a validation split generated on demand, 768 KiB an",
            f"image, {smallest:.3g}x to {largest:.3g}x a limit of {limit_mib} MiB, and every",
            f"search runs under that limit: the process may map at most {limit_mib} MiB more than it held after",
            "its setup (`RLIMIT_DATA`, inherited by DataLoader workers). *default*: autoprune's validation",
            "batches as a study reads them (a split above `CACHE_BYTES`, 512 MiB, streamed on every pass);",
            "*cache_bytes=0*: never cached; *all kept*: every batch kept after its first pass, as a list of",
            "the split's tensors held them. Peak RSS is the process's `ru_maxrss`; *workers*: the largest of",
            "its DataLoader workers' (`RUSAGE_CHILDREN`), each a fork of it, so sharing most of its pages;",
            "tracemalloc sees Python objects only, not tensor storage.",
            "",
            "| run | split | images | passes read | peak RSS | after setup | workers | tracemalloc peak | result |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in memory:
            result = f"{r.get('completed', 0)} trials in {r['seconds']:.0f} s" if r["ok"] else f"failed: {r['error']}"
            lines.append(
                f"| {r['run']} | {r['split_mib'] / 1024:.2f} GiB | {r['images']:,} | {r.get('passes', 0):.1f} | "
                f"{r.get('peak_rss_mib', 0):.0f} MiB | {r.get('setup_mib', 0):.0f} MiB | "
                f"{_mib(r.get('workers_peak_rss_mib', 0))} | {r.get('tracemalloc_peak_mib', 0):.1f} MiB | {result} |"
            )
        lines.append("")
    if wall:
        base = wall["trial"]["in memory"]
        lines += [
            "Per-trial wall time on the Fashion-MNIST benchmark study (`studies/bench-fashion-mnist.toml`, its",
            f"{wall['images']:,}-image validation split, its untrained ResNet-20: the time of a trial does not",
            f"depend on the weights), the same {wall['plans']} random plans scored as trials score them (prune,",
            "recalibrate, evaluate with the study's early stop, measure), the three paths alternated plan by plan;",
            "medians. *streamed*: `cache_bytes=0`, every pass read through the DataLoader again. *paired*: the",
            "median over plans of a plan's time on the path over its time in memory in the same round.",
            "",
            "| validation batches | per trial | evaluation | images evaluated | / in memory | paired / in memory |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, seconds in wall["trial"].items():
            lines.append(
                f"| {name} | {seconds:.2f} s | {wall['eval'][name]:.2f} s | {wall['evaluated'][name]:,.0f} | "
                f"{seconds / base:.2f}x | {wall['paired'][name]:.2f}x |"
            )
        lines.append("")
    if shared:
        lines += ["The machine was shared with other jobs while this ran: the timings are noisy.", ""]
    lines += [measured_line(), "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default="docs/benchmarks.md")
    parser.add_argument("--limit-mib", type=int, default=1024, help="the memory limit the split sizes are multiples of")
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 20], help="split sizes, in limits")
    parser.add_argument("--trials", type=int, default=2, help="trials of each memory search")
    parser.add_argument("--plans", type=int, default=10, help="plans timed on each path (after one warm-up plan)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-wall", action="store_true")
    parser.add_argument("--shared", action="store_true", help="say in the document that the machine was shared")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(**json.loads(args.child))))
        return 0
    memory = None if args.skip_memory else memory_rows(args.limit_mib, args.sizes, args.trials)
    wall = None if args.skip_wall else wall_rows(args.plans)
    if wall:
        base = wall["trial"]["in memory"]
        for name, seconds in wall["trial"].items():
            print(
                f"{name}: {seconds:.2f} s per trial, {seconds / base:.2f}x the in-memory path "
                f"(paired {wall['paired'][name]:.2f}x)"
            )
    for r in memory or []:
        print(f"{r['run']}: split {r['split_mib']:.0f} MiB, peak RSS {r.get('peak_rss_mib', 0):.0f} MiB, ok {r['ok']}")
    write_section(args.doc, section(memory, wall, args.limit_mib, args.shared), BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
