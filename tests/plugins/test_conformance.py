"""autoprune's own plugins, tested with the conformance suite that plugin authors use.

Each suite is parametrized over its registry (timm's style), so a plugin registered
anywhere is tested here without a line of its own.
"""

from __future__ import annotations

import pytest

import autoprune
from autoprune.testing import (
    DatasetConformance,
    ImportanceConformance,
    MetricConformance,
    ModelConformance,
    TaskConformance,
    WeightImportanceConformance,
)

IMPORTANCES = autoprune.list_importances()
WEIGHT_IMPORTANCES = autoprune.list_weight_importances()
METRICS = autoprune.list_metrics()

#: What some models need beyond the suite's defaults: larger inputs, or parameters.
MODEL_OPTIONS = {
    "small_detector": {"params": {"width": 8, "image_size": 48}, "input_size": (48, 48)},
    "torchvision/resnet18": {"input_size": (32, 32)},
    "timm/mobilenetv3_small_100": {"input_size": (32, 32)},
    "torchvision/lraspp_mobilenet_v3_large": {"input_size": (32, 32)},
}
#: Every registered model but torchvision's and timm's hundreds, of which those in MODEL_OPTIONS stand for
#: the rest (with tests/plugins/test_timm.py).
MODELS = sorted({*(n for n in autoprune.list_models() if not n.startswith(("torchvision/", "timm/"))), *MODEL_OPTIONS})

SCENES = {"images": 12, "test_images": 0, "size": 64}

#: Each built-in task on a dataset and a model of its kind.
TASKS = {
    "classification": {"dataset": "digits", "model": "small_cnn", "model_params": {"width": 8}},
    "detection": {
        "dataset": "driving_scenes",
        "dataset_params": {"task": "detection", **SCENES},
        "model": "torchvision/fasterrcnn_mobilenet_v3_large_320_fpn",
        "model_params": {"min_size": 64, "max_size": 64},
    },
    "segmentation": {
        "dataset": "driving_scenes",
        "dataset_params": {"task": "segmentation", **SCENES},
        "model": "torchvision/lraspp_mobilenet_v3_large",
    },
}


def _cases(attribute: str, names: list[str], options: dict[str, dict] | None = None) -> list:
    """One case a name: the suite's ``attribute`` set to it, with the name's ``options``."""
    return [pytest.param({attribute: name, **(options or {}).get(name, {})}, id=name) for name in names]


class Parametrized:
    """Sets the suite's class attributes from the test's ``case`` (a mapping of attribute to value)."""

    @pytest.fixture(autouse=True)
    def _case(self, case):
        for attribute, value in case.items():
            setattr(self, attribute, value)


@pytest.mark.parametrize("case", _cases("importance", IMPORTANCES))
class TestImportance(Parametrized, ImportanceConformance):
    """Every registered importance."""


@pytest.mark.parametrize("case", _cases("weight_importance", WEIGHT_IMPORTANCES))
class TestWeightImportance(Parametrized, WeightImportanceConformance):
    """Every registered weight importance."""


@pytest.mark.parametrize("case", _cases("metric", METRICS))
class TestMetric(Parametrized, MetricConformance):
    """Every registered metric."""


@pytest.mark.parametrize("case", _cases("model", MODELS, MODEL_OPTIONS))
class TestModel(Parametrized, ModelConformance):
    """Every registered model but the zoos', and one of each zoo's kinds."""


@pytest.mark.parametrize(
    "case",
    [
        pytest.param({"dataset": "digits"}, id="digits"),
        pytest.param(
            {"dataset": "driving_scenes", "params": {"task": "detection", "images": 40, "size": 64}},
            id="driving_scenes-detection",
        ),
        pytest.param(
            {"dataset": "driving_scenes", "params": {"task": "segmentation", "images": 40, "size": 64}},
            id="driving_scenes-segmentation",
        ),
    ],
)
class TestDataset(Parametrized, DatasetConformance):
    """The built-in datasets that need no download or folder (tests/plugins/test_folder_datasets.py has those)."""


@pytest.mark.parametrize("case", [pytest.param({"task": name, **TASKS[name]}, id=name) for name in TASKS])
class TestTask(Parametrized, TaskConformance):
    """Every built-in task."""


def test_suite_covers_every_builtin_task():
    builtin = {e.name for e in autoprune.plugins.list_entries("task") if e.source.plugin == "tasks_builtin"}
    assert set(TASKS) == builtin == {"classification", "detection", "segmentation"}
    assert builtin <= set(autoprune.list_tasks())


class TestCallableImportance(ImportanceConformance):
    """A plain function works too, without registering it."""

    @staticmethod
    def importance(group):
        return sum(w.flatten(1).abs().amax(1) for w in group.weights).double()


def test_suite_covers_every_builtin_importance():
    assert set(IMPORTANCES) == set(autoprune.list_importances())


class TestCallableWeightImportance(WeightImportanceConformance):
    """A plain function scores weights too: here the weight's square."""

    @staticmethod
    def weight_importance(weight, grad):
        return weight.pow(2)


def test_suite_covers_every_builtin_weight_importance():
    assert set(WEIGHT_IMPORTANCES) == set(autoprune.list_weight_importances()) == {"magnitude", "snip"}


def test_suite_covers_every_builtin_metric():
    assert set(METRICS) == set(autoprune.list_metrics()) >= {"accuracy", "flops", "params", "latency", "size_bytes"}


def test_suite_covers_every_registered_model_outside_the_zoos():
    outside = {n for n in autoprune.list_models() if not n.startswith(("torchvision/", "timm/"))}
    assert outside <= set(MODELS) <= set(autoprune.list_models())
    assert {"small_cnn", "resnet20", "small_detector", "small_segmenter"} <= outside
