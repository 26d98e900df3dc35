"""coco_folder and seg_folder: users' own detection and segmentation data, and one-line errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import autoprune
from autoprune.testing import DatasetConformance


def _coco(tmp_path, count=6, **changes):
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    document = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "sign"}]}
    for i in range(count):
        Image.new("RGB", (80, 40), (i * 30, 100, 50)).save(folder / f"{i}.jpg")
        document["images"].append({"id": 100 + i, "file_name": f"{i}.jpg", "width": 80, "height": 40})
        document["annotations"].append({"id": i, "image_id": 100 + i, "category_id": 7, "bbox": [8, 4, 40, 20]})
    document["annotations"].append({"id": 90, "image_id": 100, "category_id": 3, "bbox": [60, 10, 10, 10]})
    document["annotations"].append({"id": 91, "image_id": 100, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1})
    document["annotations"].append({"id": 92, "image_id": 101, "category_id": 3, "bbox": [1, 1, 0, 5]})
    document.update(changes)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document))
    return folder, path


def test_coco_folder_reads_boxes_in_torchvision_s_format_scaled_to_the_image_size(tmp_path):
    folder, annotations = _coco(tmp_path)
    data = autoprune.create_dataset(
        "coco_folder", images=str(folder), annotations=str(annotations), image_size=[20, 40], val_fraction=0.5
    )
    assert data.task == "detection" and data.num_classes == 3 and data.input_shape == (3, 20, 40)
    samples = {
        round(float(image[0, 0, 0]) * 255 / 30): target for split in (data.train, data.val) for image, target in split
    }
    assert sorted(samples) == list(range(6))
    first = samples[0]  # category 7 is label 2 (ids in order: 3 -> 1, 7 -> 2); crowd left out
    assert first["labels"].tolist() == [2, 1]
    assert torch.allclose(first["boxes"], torch.tensor([[4.0, 2.0, 24.0, 12.0], [30.0, 5.0, 35.0, 10.0]]))
    assert samples[1]["labels"].tolist() == [2]  # the box without width is left out
    image, _ = data.train[0]
    assert image.shape == (3, 20, 40) and float(image.min()) >= 0.0 and float(image.max()) <= 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"images": {"id": 1}},
            "is not a COCO instances file: it needs lists 'images', 'annotations' and 'categories'",
        ),
        ({"categories": []}, "has no categories"),
        (
            {"images": [{"id": 1, "file_name": "missing.jpg"}], "annotations": []},
            r"images\[0\] names 'missing.jpg', which is not in",
        ),
        (
            {"annotations": [{"image_id": 100, "category_id": 5, "bbox": [0, 0, 1, 1]}]},
            r"annotations\[0\] needs 'category_id' as a category id \(3, 7\), got 5",
        ),
        (
            {"annotations": [{"image_id": 100, "category_id": 7, "bbox": [0, 0, 1]}]},
            r"annotations\[0\] needs 'bbox' as \[x, y, width, height\], got \[0, 0, 1\]",
        ),
        (
            {"annotations": [{"image_id": 55, "category_id": 7, "bbox": [0, 0, 1, 1]}]},
            r"annotations\[0\] needs 'image_id' as the id of a listed image, got 55",
        ),
    ],
)
def test_a_malformed_coco_file_is_one_line_naming_what_is_wrong(tmp_path, changes, message):
    folder, annotations = _coco(tmp_path, **changes)
    with pytest.raises(autoprune.AutopruneError, match=message) as caught:
        autoprune.create_dataset("coco_folder", images=str(folder), annotations=str(annotations))
    assert "\n" not in str(caught.value) and str(annotations) in str(caught.value)


def test_coco_folder_file_errors(tmp_path):
    folder, annotations = _coco(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    for kwargs, message in (
        ({"annotations": str(tmp_path / "none.json")}, "annotations must be an existing COCO JSON file"),
        ({"annotations": str(tmp_path / "broken.json")}, "broken.json is not JSON"),
        ({"images": str(tmp_path / "nowhere")}, "coco_folder images must be an existing folder"),
        ({"test_images": str(folder)}, "coco_folder needs test_images and test_annotations together"),
        ({"image_size": 8}, r"image_size must be an integer >= 16 or \[height, width\], got 8"),
    ):
        with pytest.raises(autoprune.AutopruneError, match=message):
            autoprune.create_dataset(
                "coco_folder", **{"images": str(folder), "annotations": str(annotations), **kwargs}
            )


def _masks(tmp_path, count=5, mode="L", top=3, name="masks", images="masks_images", ignore=255):
    image_dir, mask_dir = tmp_path / images, tmp_path / name
    image_dir.mkdir(exist_ok=True)
    mask_dir.mkdir(exist_ok=True)
    for i in range(count):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(image_dir / f"scene{i}.png")
        labels = np.zeros((32, 32), np.uint8)
        labels[:, 16:] = top
        labels[:4, :4] = ignore
        Image.fromarray(labels).convert(mode).save(mask_dir / f"scene{i}.png")
    return image_dir, mask_dir


def test_seg_folder_pairs_images_with_masks_and_infers_the_classes(tmp_path):
    images, masks = _masks(tmp_path)
    data = autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks), image_size=16, val_fraction=0.4)
    assert data.task == "segmentation" and data.num_classes == 4 and data.input_shape == (3, 16, 16)
    image, labels = data.val[0]
    assert image.shape == (3, 16, 16) and labels.shape == (16, 16) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) == {0, 3, 255} and (labels[:, 8:] == 3).all()
    images, masks = _masks(tmp_path, name="masks9", images="images9", ignore=9)
    ignored = autoprune.create_dataset(
        "seg_folder", images=str(images), masks=str(masks), ignore_index=9, image_size=16
    )  # the user's ignore value becomes the task's 255
    assert set(ignored.train[0][1].unique().tolist()) == {0, 3, 255} and ignored.num_classes == 4


def test_seg_folder_errors_are_one_line(tmp_path):
    images, masks = _masks(tmp_path)
    rgb_images, rgb_masks = _masks(tmp_path, mode="RGB", name="rgb", images="rgb_images")
    (images / "extra.png").write_bytes((images / "scene0.png").read_bytes())
    for kwargs, message in (
        ({}, r"image 'extra.png' has no mask 'extra.png' in"),
        ({"images": str(rgb_images), "masks": str(rgb_masks)}, "is mode RGB; masks are single-channel PNGs"),
        ({"masks": str(tmp_path / "none")}, "seg_folder masks must be an existing folder"),
    ):
        with pytest.raises(autoprune.AutopruneError, match=message):
            autoprune.create_dataset("seg_folder", **{"images": str(images), "masks": str(masks), **kwargs})
    (images / "extra.png").unlink()
    with pytest.raises(
        autoprune.AutopruneError,
        match=r"the masks hold class 3, but num_classes is 3 "
        r"\(classes 0 to 2; ignore_index 255 is ignored\)",
    ):
        autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks), num_classes=3)


class TestCocoFolderConforms(DatasetConformance):
    dataset = "coco_folder"

    @pytest.fixture(autouse=True)
    def _files(self, tmp_path):
        folder, annotations = _coco(tmp_path)
        self.params = {
            "images": str(folder),
            "annotations": str(annotations),
            "image_size": 32,
            "test_images": str(folder),
            "test_annotations": str(annotations),
            "val_fraction": 0.3,
        }


class TestSegFolderConforms(DatasetConformance):
    dataset = "seg_folder"

    @pytest.fixture(autouse=True)
    def _files(self, tmp_path):
        images, masks = _masks(tmp_path)
        self.params = {"images": str(images), "masks": str(masks), "image_size": 16}
