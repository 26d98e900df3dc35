"""driving_scenes: synthetic road scenes, the same for a seed, with boxes that match the per-pixel labels."""

from __future__ import annotations

import pytest
import torch

import autoprune


def _scenes(task: str, seed: int = 0, **params):
    return autoprune.create_dataset("driving_scenes", task=task, images=20, test_images=4, size=64, seed=seed, **params)


def test_the_scenes_are_the_same_for_a_seed_and_differ_for_another():
    first, again, other = _scenes("detection"), _scenes("detection"), _scenes("detection", seed=1)
    for i in range(5):
        (x, t), (y, u) = first.train[i], again.train[i]
        assert torch.equal(x, y) and torch.equal(t["boxes"], u["boxes"]) and torch.equal(t["labels"], u["labels"])
    assert not any(torch.equal(first.train[i][0], other.train[i][0]) for i in range(5))
    assert not torch.equal(first.train[0][0], first.val[0][0]) and not torch.equal(first.val[0][0], first.test[0][0])


def test_detection_targets_are_torchvision_s_and_match_the_segmentation_of_the_same_scene():
    detection, segmentation = _scenes("detection"), _scenes("segmentation")
    assert (detection.task, detection.num_classes, detection.input_shape) == ("detection", 4, (3, 64, 64))
    assert (segmentation.task, segmentation.num_classes) == ("segmentation", 6)
    assert (len(detection.train), len(detection.val), len(detection.test)) == (16, 4, 4)
    seen = set()
    for i in range(len(detection.train)):
        (x, target), (y, labels) = detection.train[i], segmentation.train[i]
        assert torch.equal(x, y) and x.shape == (3, 64, 64) and x.min() >= 0 and x.max() <= 1
        assert labels.shape == (64, 64) and labels.dtype == torch.int64 and int(labels.max()) <= 5
        assert (labels == 1).any() and (labels == 2).any()  # a road with markings in every scene
        boxes, classes = target["boxes"], target["labels"]
        assert boxes.dtype == torch.float32 and classes.dtype == torch.int64 and len(boxes) == len(classes)
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        assert boxes.shape == (len(classes), 4)  # a scene whose objects are all hidden has none
        if len(boxes):
            assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 64 and boxes[:, [1, 3]].max() <= 64
        for box, kind in zip(boxes.long().tolist(), classes.tolist()):
            x0, y0, x1, y1 = box
            inside = labels[y0:y1, x0:x1]
            assert (inside == kind + 2).float().mean() > 0.2, (i, box, kind)  # car 3, pedestrian 4, sign 5
            seen.add(kind)
    assert seen == {1, 2, 3}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"task": "tracking"}, "driving_scenes task must be one of 'detection', 'segmentation', got 'tracking'"),
        ({"task": "detection", "size": 8}, "driving_scenes size must be an integer >= 16, got 8"),
        ({"task": "detection", "images": 1}, "driving_scenes images must be an integer >= 2, got 1"),
        ({"task": "detection", "val_fraction": 1.5}, "val_fraction must be between 0 and 1"),
    ],
)
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(autoprune.AutopruneError, match=message):
        autoprune.create_dataset("driving_scenes", **params)
