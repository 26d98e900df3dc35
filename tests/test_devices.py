"""study.device: where a study trains and scores, resolved and checked before any work."""

from __future__ import annotations

import copy
import logging

import optuna
import pytest
import torch

import autoprune
from autoprune.devices import resolve_device

pytestmark = pytest.mark.baseline("brief")
SEARCH = {"max_accuracy_drop": 5.0, "trials": 2, "uniform_starts": (), "calibration_batches": 1, "warm_start": "none"}


def test_auto_takes_cuda_when_torch_sees_it_and_the_cpu_otherwise(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")


def test_a_cuda_device_this_machine_lacks_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(autoprune.AutopruneError, match="device 'cuda' but torch sees no CUDA device on this machine"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(autoprune.AutopruneError, match=r"has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "CPU", "cuda:-1", 0])
def test_device_names_follow_the_rule(name):
    with pytest.raises(autoprune.AutopruneError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        autoprune.SearchSettings(max_accuracy_drop=1.0, device=name)


def test_a_study_records_the_device_its_trials_ran_on_and_says_when_a_process_joins_from_another(
    baseline, digits, tmp_path, caplog
):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = autoprune.search(copy.deepcopy(baseline), digits, storage=storage, study_name="d", device="cpu", **SEARCH)
    assert first.record.run["trial_device"] == "cpu"
    assert next(first.baseline.parameters()).device == torch.device("cpu")
    optuna.load_study(study_name="d", storage=storage).set_user_attr("trial_device", "cuda:0")  # as if made on a GPU
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        autoprune.search(copy.deepcopy(baseline), digits, storage=storage, study_name="d", **{**SEARCH, "trials": 3})
    assert any("was created on cuda:0 and this process runs on cpu" in m for m in caplog.messages)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_search_on_cuda_scores_each_plan_as_the_cpu_does(baseline, digits):
    """On CUDA every trial runs on the GPU; the same plan re-scored on the CPU agrees within 0.1 points."""
    model = copy.deepcopy(baseline)
    result = autoprune.search(model, digits, device="cuda", **{**SEARCH, "trials": 4})
    assert next(model.parameters()).device == torch.device("cpu")  # the caller's model stays where it was
    assert next(result.baseline.parameters()).device.type == "cuda" and result.record.run["trial_device"].startswith(
        "cuda"
    )
    on_cpu = autoprune.search(copy.deepcopy(baseline), digits, device="cpu", **{**SEARCH, "trials": 1})
    evaluator = autoprune.searcher.Evaluator.build(on_cpu.baseline, digits, on_cpu.record.settings)
    for trial in result.record.completed():
        if result.record.value(trial, "evaluated") < evaluator.budget.total:
            continue  # stopped early: its accuracy is an estimate
        scored = evaluator.evaluate(result.record.plan(trial), early_stop="off")
        assert scored["accuracy"] == pytest.approx(result.record.value(trial, "accuracy"), abs=0.1)
