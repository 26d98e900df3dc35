"""Mixed precision (``study.amp``): trials and the baseline scored under autocast, BatchNorm recalibrated in
float32, fine-tuning with a scaled float16 loss. Run on the CPU, whose autocast takes both half types."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import autoprune
from autoprune.precision import autocast, grad_scaler
from autoprune.searcher.evaluation import Evaluator

pytestmark = pytest.mark.baseline("brief")


class DtypeSpy:
    """Records the dtype of every Conv2d output while ``phase`` is set; ``hook`` is a plain function, which a
    deep copy of the model (a pruned copy) keeps as it is, where a bound method would be copied with its spy."""

    def __init__(self) -> None:
        self.phase, self.seen = None, {}

        def hook(module, inputs, output) -> None:
            if self.phase is not None:
                self.seen.setdefault(self.phase, set()).add(output.dtype)

        self.hook = hook


@pytest.mark.parametrize(("amp", "dtype"), [("off", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_trials_are_scored_under_the_study_amp_and_recalibrated_in_float32(baseline, digits, amp, dtype, monkeypatch):
    from autoprune.searcher import evaluation

    spy = DtypeSpy()
    recalibrate, count_correct = evaluation.recalibrate_batchnorm, evaluation.count_correct

    def during(phase, function):
        def spied(model, *args, **kwargs):
            for module in model.modules():
                if isinstance(module, nn.Conv2d) and not module._forward_hooks:  # a pruned copy keeps its hooks
                    module.register_forward_hook(spy.hook)
            spy.phase = phase
            try:
                return function(model, *args, **kwargs)
            finally:
                spy.phase = None

        return spied

    monkeypatch.setattr(evaluation, "recalibrate_batchnorm", during("recalibration", recalibrate))
    monkeypatch.setattr(evaluation, "count_correct", during("scoring", count_correct))
    settings = autoprune.SearchSettings(1.0, amp=amp, calibration_batches=2, early_stop="off")
    evaluator = Evaluator.build(copy.deepcopy(baseline), digits, settings)
    metrics = evaluator.evaluate(evaluator.space.uniform(0.3))
    assert spy.seen == {"recalibration": {torch.float32}, "scoring": {dtype}}  # the baseline's and the plan's
    assert 0 <= metrics["accuracy"] <= 100 and metrics["evaluated"] == len(digits.val)
    assert all(p.dtype == torch.float32 for p in evaluator.baseline.parameters())  # the weights stay float32


def test_the_baseline_is_scored_as_the_trials_are(baseline, digits):
    """A drop measured under autocast against a float32 baseline would count rounding as pruning damage."""
    val = autoprune.batches.validation_batches(digits, 128, 0)
    for amp in ("off", "bf16", "fp16"):
        evaluator = Evaluator.build(copy.deepcopy(baseline), digits, autoprune.SearchSettings(1.0, amp=amp))
        with autocast(baseline, amp):
            assert evaluator.base["accuracy"] == autoprune.metrics.accuracy(baseline, val)
    with torch.inference_mode():
        logits = baseline(next(iter(val))[0])
        with autocast(baseline, "bf16"):
            assert baseline(next(iter(val))[0]).dtype == torch.bfloat16 and logits.dtype == torch.float32


def test_fp16_fine_tuning_scales_the_loss_and_trains_float32_weights(digits):
    recipe = autoprune.TrainSettings(epochs=3, batch_size=64, lr=0.05)
    torch.manual_seed(0)
    untrained = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    val = autoprune.batches.validation_batches(digits, 128, 0)
    trained = {
        amp: autoprune.train(copy.deepcopy(untrained), digits, recipe, seed=0, amp=amp) for amp in ("off", "fp16")
    }
    assert all(p.dtype == torch.float32 for p in trained["fp16"].parameters())
    accuracy = {amp: autoprune.metrics.accuracy(model, val) for amp, model in trained.items()}
    assert accuracy["off"] > 60 and abs(accuracy["fp16"] - accuracy["off"]) < 3  # it learned as float32 does
    changed = [not torch.equal(a, b) for a, b in zip(trained["off"].parameters(), trained["fp16"].parameters())]
    assert all(changed)  # in half precision, not a float32 run under another name
    assert grad_scaler(untrained, "fp16").is_enabled() and not grad_scaler(untrained, "bf16").is_enabled()
    plain = autoprune.train(copy.deepcopy(untrained), digits, recipe.replace(epochs=1), seed=0)
    off = autoprune.train(copy.deepcopy(untrained), digits, recipe.replace(epochs=1), seed=0, amp="off")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), off.state_dict().values()))


def test_a_search_with_amp_records_it_and_refuses_a_resume_without_it(tmp_path, study_file, capsys):
    from autoprune import cli

    study = study_file("s.toml", study={"name": "amp", "amp": "bf16"}, train={"epochs": 1})
    out = tmp_path / "out"
    assert cli.main(["search", str(study), "--trials", "3", "--out", str(out), "--quiet"]) == 0
    record = autoprune.Study.load(out).record
    assert record.settings.amp == "bf16"
    again = study_file("t.toml", study={"name": "amp", "amp": "off"}, train={"epochs": 1})
    assert cli.main(["search", str(again), "--trials", "4", "--out", str(out), "--quiet"]) == 2
    assert "study.amp='bf16'" in capsys.readouterr().err
