"""`make gpu-check` (benchmarks/gpu_check.py): one line and exit 0 without CUDA; its comparison of a study's
trials with the same plans re-scored on the CPU, exercised on a study that ran on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autoprune import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    return gpu_check


def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["gpu-check: no CUDA device on this machine; nothing to check"]


def test_the_cpu_rescoring_agrees_with_a_study_scored_on_the_cpu_and_sees_a_changed_score(
    gpu_check, tmp_path, study_file, monkeypatch
):
    study = study_file("s.toml", study={"name": "check"}, train={"epochs": 1}, search={"early_stop": "off"})
    out = tmp_path / "out"
    assert cli.main(["search", str(study), "--trials", "4", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    differences = gpu_check.cpu_differences(out)
    assert len(differences) >= 3 and all(abs(d) < 1e-9 for d in differences)
    from autoprune.searcher import Evaluator

    evaluate = Evaluator.evaluate

    def disagreeing(self, *args, **kwargs):
        metrics = evaluate(self, *args, **kwargs)
        return {**metrics, "accuracy": metrics["accuracy"] + 0.2}

    monkeypatch.setattr(Evaluator, "evaluate", disagreeing)
    assert [round(d, 9) for d in gpu_check.cpu_differences(out)] == [-0.2] * len(differences)  # a CPU that disagrees


def test_the_latency_check_times_a_table_of_the_quickstart_model(gpu_check, tmp_path):
    outcomes = gpu_check.check_latency_table(tmp_path, device="cpu")  # on CUDA it runs on "cuda"
    names = [o.name for o in outcomes]
    assert names[:2] == ["latency table, torch cpu", "latency table, onnxruntime CPUExecutionProvider"]
    assert all(o.ok and "12 groups; baseline" in o.detail for o in outcomes)
