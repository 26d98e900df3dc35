"""autoprune's own plugins, tested with the conformance suite that plugin authors use."""

from __future__ import annotations

import autoprune
from autoprune.testing import (
    DatasetConformance,
    ImportanceConformance,
    MetricConformance,
    ModelConformance,
    TaskConformance,
    WeightImportanceConformance,
    registered,
)

for _name in registered("importance"):
    globals()[f"TestImportance_{_name}"] = type(
        f"TestImportance_{_name}", (ImportanceConformance,), {"importance": _name}
    )

for _name in registered("weight_importance"):
    globals()[f"TestWeightImportance_{_name}"] = type(
        f"TestWeightImportance_{_name}", (WeightImportanceConformance,), {"weight_importance": _name}
    )

for _name in registered("metric"):
    globals()[f"TestMetric_{_name}"] = type(f"TestMetric_{_name}", (MetricConformance,), {"metric": _name})

# torchvision's and timm's hundreds of models: one representative each below (and tests/plugins/test_timm.py)
for _name in [n for n in registered("model") if not n.startswith(("torchvision/", "timm/")) and n != "small_detector"]:
    globals()[f"TestModel_{_name}"] = type(f"TestModel_{_name}", (ModelConformance,), {"model": _name})


class TestModel_torchvision_resnet18(ModelConformance):
    model = "torchvision/resnet18"
    input_size = (32, 32)


class TestModel_timm_mobilenetv3_small_100(ModelConformance):
    model = "timm/mobilenetv3_small_100"
    input_size = (32, 32)


class TestModel_small_detector(ModelConformance):
    model, params, input_size = "small_detector", {"width": 8, "image_size": 48}, (48, 48)


class TestModel_torchvision_lraspp_mobilenet_v3_large(ModelConformance):
    model, input_size = "torchvision/lraspp_mobilenet_v3_large", (32, 32)


class TestDataset_digits(DatasetConformance):
    dataset = "digits"


class TestDataset_driving_scenes_detection(DatasetConformance):
    dataset = "driving_scenes"
    params = {"task": "detection", "images": 40, "size": 64}


class TestDataset_driving_scenes_segmentation(DatasetConformance):
    dataset = "driving_scenes"
    params = {"task": "segmentation", "images": 40, "size": 64}


SCENES = {"images": 12, "test_images": 0, "size": 64}


class TestTask_classification(TaskConformance):
    task, dataset, model, model_params = "classification", "digits", "small_cnn", {"width": 8}


class TestTask_detection(TaskConformance):
    task, dataset, dataset_params = "detection", "driving_scenes", {"task": "detection", **SCENES}
    model, model_params = "torchvision/fasterrcnn_mobilenet_v3_large_320_fpn", {"min_size": 64, "max_size": 64}


class TestTask_segmentation(TaskConformance):
    task, dataset, dataset_params = "segmentation", "driving_scenes", {"task": "segmentation", **SCENES}
    model = "torchvision/lraspp_mobilenet_v3_large"


def test_suite_covers_every_builtin_task():
    names = {n.removeprefix("TestTask_") for n in globals() if n.startswith("TestTask_")}
    builtin = {e.name for e in autoprune.plugins.list_entries("task") if e.source.plugin == "tasks_builtin"}
    assert names == builtin == {"classification", "detection", "segmentation"}
    assert builtin <= set(autoprune.list_tasks())


class TestCallableImportance(ImportanceConformance):
    """A plain function works too, without registering it."""

    @staticmethod
    def importance(group):
        return sum(w.flatten(1).abs().amax(1) for w in group.weights).double()


def test_suite_covers_every_builtin_importance():
    names = {n.removeprefix("TestImportance_") for n in globals() if n.startswith("TestImportance_")}
    assert names == set(autoprune.list_importances())


class TestCallableWeightImportance(WeightImportanceConformance):
    """A plain function scores weights too: here the weight's square."""

    @staticmethod
    def weight_importance(weight, grad):
        return weight.pow(2)


def test_suite_covers_every_builtin_weight_importance():
    names = {n.removeprefix("TestWeightImportance_") for n in globals() if n.startswith("TestWeightImportance_")}
    assert names == set(autoprune.list_weight_importances()) == {"magnitude", "snip"}


def test_suite_covers_every_builtin_metric():
    names = {n.removeprefix("TestMetric_") for n in globals() if n.startswith("TestMetric_")}
    assert names == set(autoprune.list_metrics()) >= {"accuracy", "flops", "params", "latency", "size_bytes"}
