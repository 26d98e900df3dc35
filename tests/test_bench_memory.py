"""The memory benchmark's own helpers: the generated split it searches and the limit it runs under."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
try:
    import bench_memory
finally:
    sys.path.remove(str(BENCHMARKS))


def test_the_lazy_split_makes_a_fresh_image_per_read_and_counts_the_reads_of_its_workers():
    split = bench_memory.LazySplit(20, shape=(3, 4, 4))
    first, again = split[13], split[13]
    assert first[1] == 3 == split.targets[13] and torch.equal(first[0], again[0])
    assert first[0].untyped_storage().data_ptr() != again[0].untyped_storage().data_ptr()  # held by no one else
    assert split[3][0][0, 0, 0] != first[0][0, 0, 0]  # another image, another value
    with pytest.raises(IndexError):
        split[20]
    labels = [int(y) for _, ys in DataLoader(split, batch_size=8, num_workers=1) for y in ys]
    assert labels == split.targets and split.reads == 3 + 20  # the worker's reads counted here too


def test_images_for_counts_the_images_that_hold_so_many_mib():
    assert bench_memory.images_for(1024) == 1365  # 1 GiB of 768 KiB images
    assert bench_memory.images_for(0.001) == 1


def test_the_limit_refuses_an_allocation_beyond_it_and_allows_one_within():
    code = (
        "import sys, torch; sys.path.insert(0, 'benchmarks'); import bench_memory; "
        "bench_memory.limit_data(64 * 2**20); torch.empty(16 * 2**20, dtype=torch.uint8).fill_(1); "
        "torch.empty(256 * 2**20, dtype=torch.uint8)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=BENCHMARKS.parent, check=False
    )
    assert done.returncode == 1 and "can't allocate memory" in done.stderr


def test_the_section_reports_a_failed_search_and_the_ratio_to_the_in_memory_path():
    row = {"run": "20x, all kept", "split_mib": 20480.0, "images": 27307, "ok": False, "error": "RuntimeError: no"}
    wall = {
        "plans": 4,
        "images": 6000,
        "trial": {"in memory": 2.0, "streamed, 0 workers": 2.5},
        "eval": {"in memory": 1.0, "streamed, 0 workers": 1.5},
        "evaluated": {"in memory": 6000, "streamed, 0 workers": 6000},
        "paired": {"in memory": 1.0, "streamed, 0 workers": 1.2},
    }
    text = bench_memory.section([row], wall, 1024, shared=True)
    assert text.startswith(bench_memory.BEGIN) and text.endswith(bench_memory.END)
    assert "| 20x, all kept | 20.00 GiB | 27,307 |" in text and "failed: RuntimeError: no |" in text
    assert "| streamed, 0 workers | 2.50 s | 1.50 s | 6,000 | 1.25x | 1.20x |" in text
    assert "shared" in text
