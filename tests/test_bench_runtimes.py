"""The runtime benchmark's own parts: the cases it reads, the rows it measures and the section it writes."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
try:
    import bench_runtimes
finally:
    sys.path.remove(str(BENCHMARKS))


def test_the_cases_are_the_benchmark_studys_chosen_plans_then_torchvision_models():
    cases = bench_runtimes.cases()
    chosen = [c for c in cases if c["model"] == "resnet20"]
    assert [c["plan"] for c in chosen] == [f"chosen plan at a {b} point budget" for b in (0.5, 1.0, 2.0)]
    assert all(isinstance(c["rates"], dict) and c["rates"] for c in chosen)
    assert [c["model"] for c in cases[len(chosen) :]] == ["torchvision/mobilenet_v2", "torchvision/resnet18"]


def test_a_measured_row_per_plan_and_rounding_shares_one_baseline_and_is_written_as_a_table(monkeypatch):
    monkeypatch.setattr(bench_runtimes, "MIN_RUN_TIME", 0.01)
    case = {"model": "small_cnn", "kwargs": {"num_classes": 10, "in_channels": 3, "width": 40}, "shape": (1, 3, 8, 8)}
    cases = [{**case, "plan": "uniform 0.3", "rates": 0.3}, {**case, "plan": "uniform 0.5", "rates": 0.5}]
    rows = bench_runtimes.measure(cases, threads=1, repeats=1, batch_sizes=(1, 2))
    assert [(r["plan"], r["round_to"], r["batch"]) for r in rows] == [
        (plan, rounding, batch)
        for batch in (1, 2)
        for plan in ("uniform 0.3", "uniform 0.5")
        for rounding in ("1", "auto")
    ]
    assert rows[0]["flops_speedup"] == rows[4]["flops_speedup"]  # FLOPs are per image
    assert rows[0]["base_ms"] != rows[4]["base_ms"]  # each batch size timed on its own
    rows = rows[:4]
    assert all(r["flops_speedup"] > 1 for r in rows)
    assert all(set(r["ms"]) == set(bench_runtimes.BACKENDS) and min(r["ms"].values()) > 0 for r in rows)
    assert len({tuple(r["base_ms"].values()) for r in rows}) == 1  # one baseline timing for all
    # 40 channels at 0.3 keep 28 (round_to 1) or 32 (auto, rounded up to a multiple of 8): fewer FLOPs removed
    assert rows[1]["flops_speedup"] < rows[0]["flops_speedup"]
    text = bench_runtimes.section(rows, threads=1, repeats=1)
    assert text.startswith(bench_runtimes.BEGIN) and text.endswith(bench_runtimes.END)
    assert text.count("| `small_cnn` |") == 4 and "onnxruntime speed-up (ratio)" in text
    assert "| uniform 0.3 | auto | 1 |" in text


def test_a_model_not_batched_is_timed_at_batch_1_only(monkeypatch):
    monkeypatch.setattr(bench_runtimes, "MIN_RUN_TIME", 0.01)
    case = {"model": "small_cnn", "kwargs": {"num_classes": 10, "in_channels": 3}, "shape": (1, 3, 8, 8)}
    rows = bench_runtimes.measure([{**case, "batched": False, "plan": "uniform 0.3", "rates": 0.3}], 1, 1, (1, 4))
    assert {r["batch"] for r in rows} == {1}
