"""The example plugin, checked with autoprune's conformance suite, then used in a search."""

from __future__ import annotations

from pathlib import Path

import autoprune
from autoprune import cli
from autoprune.testing import ImportanceConformance, ModelConformance, TaskConformance

HERE = Path(__file__).resolve().parent.parent


class TestMaxAbs(ImportanceConformance):
    importance = "max_abs"


class TestExampleCNN(ModelConformance):
    model = "example_cnn"
    params = {"width": 8}


class TestRoadIoU(TaskConformance):
    task = "road_iou"
    dataset, dataset_params = "driving_scenes", {"task": "segmentation", "images": 12, "size": 64}
    model = "torchvision/lraspp_mobilenet_v3_large"


def test_road_iou_is_100_for_the_true_road_and_less_for_a_shifted_one():
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    data = autoprune.create_dataset("driving_scenes", task="segmentation", images=12, size=64)
    task = autoprune.create_task("road_iou", data.num_classes)
    batches = list(DataLoader(data.val, batch_size=2))

    class Answer(nn.Module):  # segments as the labels say, shifted by `shift` pixels
        def __init__(self, shift):
            super().__init__()
            self.shift, self.weight, self.seen = shift, nn.Parameter(torch.zeros(1)), iter(batches)

        def forward(self, x):
            labels = torch.roll(next(self.seen)[1], self.shift, dims=2)
            return {"out": nn.functional.one_hot(labels, 6).permute(0, 3, 1, 2).float()}

    assert task.score(Answer(0), batches) == 100.0
    assert 50.0 < task.score(Answer(3), batches) < 100.0


def test_installed_plugin_is_listed_with_its_distribution(capsys):
    assert cli.main(["plugins", "--kind", "importance", "max_abs"]) == 0
    assert "autoprune-example-plugin 0.1.0" in capsys.readouterr().out


def test_a_short_search_uses_its_importance_and_model(tmp_path, capsys):
    assert cli.main(["search", str(HERE / "study.toml"), "--out", str(tmp_path), "--quiet"]) == 0
    assert "4 trials" in capsys.readouterr().out
    study = autoprune.Study.load(tmp_path)
    assert study.optuna.user_attrs["model"] == "example_cnn"
    methods = {v for t in study.optuna.trials for k, v in t.params.items() if k.endswith(".method")}
    assert "max_abs" in methods
