"""coco_folder and seg_folder: users' own detection and segmentation data, and one-line errors for bad files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import write_study_file
from PIL import Image

import autoprune
from autoprune import cli
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


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "autoprune" and r.levelno == logging.WARNING]


def test_coco_folder_reads_boxes_in_torchvision_s_format_scaled_to_the_image_size(tmp_path, caplog):
    folder, annotations = _coco(tmp_path)
    data = autoprune.create_dataset(
        "coco_folder", images=str(folder), annotations=str(annotations), image_size=[20, 40], val_fraction=0.5
    )
    assert _warnings(caplog) == [
        f"coco_folder: {annotations}: dropped 2 of 9 boxes (1 crowd, 1 with width or height <= 0)"
    ]
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
            r"annotations\[0\] needs 'bbox' as \[x, y, width, height\] of finite numbers, got \[0, 0, 1\]",
        ),
        (
            {"annotations": [{"image_id": 100, "category_id": 7, "bbox": [0, 0, float("nan"), 4]}]},
            r"annotations\[0\] needs 'bbox' as \[x, y, width, height\] of finite numbers, got \[0, 0, nan, 4\]",
        ),
        ({"annotations": []}, "has 0 annotations in 6 images; a detector would learn nothing and score an mAP of 0"),
        (
            {
                "annotations": [
                    {"image_id": 100, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 1},
                    {"image_id": 101, "category_id": 7, "bbox": [4, 4, -2, 5]},
                    {"image_id": 102, "category_id": 7, "bbox": [200, 10, 5, 5]},
                ]
            },
            (
                r"has no usable box in 6 images: all 3 annotations are left out "
                r"\(1 crowd, 1 with width or height <= 0, 1 outside its image\)"
            ),
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
    """Images with masks of classes 0 (left), 1 and 2 (bands at the bottom left), ``top`` (the right half)
    and ``ignore`` (a corner)."""
    image_dir, mask_dir = tmp_path / images, tmp_path / name
    image_dir.mkdir(exist_ok=True)
    mask_dir.mkdir(exist_ok=True)
    for i in range(count):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(image_dir / f"scene{i}.png")
        labels = np.zeros((32, 32), np.uint8)
        labels[:, 16:] = top
        labels[24:, :8], labels[24:, 8:16] = 1, 2
        labels[:4, :4] = ignore
        Image.fromarray(labels).convert(mode).save(mask_dir / f"scene{i}.png")
    return image_dir, mask_dir


def test_seg_folder_pairs_images_with_masks_and_infers_the_classes(tmp_path):
    images, masks = _masks(tmp_path)
    data = autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks), image_size=16, val_fraction=0.4)
    assert data.task == "segmentation" and data.num_classes == 4 and data.input_shape == (3, 16, 16)
    image, labels = data.val[0]
    assert image.shape == (3, 16, 16) and labels.shape == (16, 16) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) == {0, 1, 2, 3, 255} and (labels[:, 8:] == 3).all()
    images, masks = _masks(tmp_path, name="masks9", images="images9", ignore=9)
    ignored = autoprune.create_dataset(
        "seg_folder", images=str(images), masks=str(masks), ignore_index=9, image_size=16
    )  # the user's ignore value becomes the task's 255
    assert set(ignored.train[0][1].unique().tolist()) == {0, 1, 2, 3, 255} and ignored.num_classes == 4


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


def test_boxes_outside_their_image_are_clipped_or_dropped_and_counted_in_one_warning(tmp_path, caplog):
    extra = [  # the images are 80 x 40
        {"image_id": 102, "category_id": 7, "bbox": [70, 30, 20, 20]},  # clipped to [70, 30, 80, 40]
        {"image_id": 102, "category_id": 3, "bbox": [-4, -2, 10, 10]},  # clipped to [0, 0, 6, 8]
        {"image_id": 102, "category_id": 7, "bbox": [0, 0, 80.2, 40]},  # under a pixel over: kept, not counted
        {"image_id": 103, "category_id": 7, "bbox": [100, 10, 5, 5]},  # right of the image
        {"image_id": 103, "category_id": 7, "bbox": [-9, 0, 4, 4]},  # left of it
        {"image_id": 103, "category_id": 7, "bbox": [5, 5, -3, 4]},  # negative width
    ]
    folder, annotations = _coco(tmp_path)
    document = json.loads(annotations.read_text())
    document["annotations"] += extra
    annotations.write_text(json.dumps(document))
    data = autoprune.create_dataset(
        "coco_folder", images=str(folder), annotations=str(annotations), image_size=[40, 80], val_fraction=0.5
    )
    assert _warnings(caplog) == [
        (
            f"coco_folder: {annotations}: dropped 5 of 15 boxes (1 crowd, 2 with width or height <= 0, "
            "2 outside their image); clipped 2 partly outside their image"
        )
    ]
    samples = {
        round(float(image[0, 0, 0]) * 255 / 30): target for split in (data.train, data.val) for image, target in split
    }
    assert samples[2]["boxes"].tolist() == [[8, 4, 48, 24], [70, 30, 80, 40], [0, 0, 6, 8], [0, 0, 80, 40]]
    assert samples[3]["boxes"].tolist() == [[8, 4, 48, 24]]


def test_a_test_annotation_file_without_boxes_is_refused_too(tmp_path):
    folder, annotations = _coco(tmp_path)
    empty = tmp_path / "test.json"
    empty.write_text(json.dumps({**json.loads(annotations.read_text()), "annotations": []}))
    with pytest.raises(autoprune.AutopruneError, match=f"coco_folder: {empty} has 0 annotations in 6 images"):
        autoprune.create_dataset(
            "coco_folder",
            images=str(folder),
            annotations=str(annotations),
            test_images=str(folder),
            test_annotations=str(empty),
        )


def _spoil(folder, names):
    """Make the files ``names`` of ``folder`` unreadable: text, an empty file, a PNG cut after its header."""
    spoilt = iter(names)
    (folder / next(spoilt)).write_text("not an image")
    (folder / next(spoilt)).write_bytes(b"")
    for name in spoilt:
        Image.new("RGB", (32, 32)).save(folder / name, format="PNG")
        (folder / name).write_bytes((folder / name).read_bytes()[:60])


def test_unreadable_images_are_found_when_the_dataset_is_built_with_how_many_and_which(tmp_path):
    folder, annotations = _coco(tmp_path)
    _spoil(folder, ["2.jpg", "4.jpg"])
    with pytest.raises(autoprune.AutopruneError) as caught:
        autoprune.create_dataset("coco_folder", images=str(folder), annotations=str(annotations))
    assert str(caught.value) == (
        f"coco_folder: 2 of 6 images in {str(folder)!r} cannot be read as images: "
        "'2.jpg' (not an image PIL can read), '4.jpg' (not an image PIL can read)"
    )
    images, masks = _masks(tmp_path, count=6)
    _spoil(images, ["scene0.png", "scene2.png", "scene3.png", "scene5.png"])
    with pytest.raises(autoprune.AutopruneError) as caught:
        autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks))
    assert str(caught.value).startswith(
        f"seg_folder: 4 of 6 images in {str(images)!r} cannot be read as images: "
        "'scene0.png' (not an image PIL can read), 'scene2.png' (not an image PIL can read), 'scene3.png' ("
    ) and str(caught.value).endswith(") and 1 more")


def _stray(masks, value, pixels=1):
    """Set ``pixels`` pixels of the first mask to ``value``."""
    path = min(masks.iterdir())
    labels = np.asarray(Image.open(path)).copy()
    labels.reshape(-1)[-pixels:] = value
    Image.fromarray(labels).save(path)


def test_sparse_class_ids_need_num_classes_and_a_rare_class_is_named_in_a_warning(tmp_path, caplog):
    images, masks = _masks(tmp_path)
    _stray(masks, 200)
    with pytest.raises(autoprune.AutopruneError) as caught:
        autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks))
    assert str(caught.value) == (
        "seg_folder: the 5 masks hold classes 0 to 3 and 200, not 0 to 200 without a gap, so num_classes is "
        "not inferred (class 200: 1 pixel): give num_classes (at least 201), or set stray values to "
        "ignore_index 255"
    )
    assert not _warnings(caplog)
    data = autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks), num_classes=201)
    assert data.num_classes == 201
    assert _warnings(caplog) == [
        (
            "seg_folder: a class has very few of 5040 labelled pixels in the 5 masks (class 200: 1 pixel): "
            "stray mask values? (set them to ignore_index 255 to leave them out)"
        )
    ]
    caplog.clear()
    images, masks = _masks(tmp_path, name="rare", images="rare_images", top=4)  # 0, 1, 2, 4; 3 rare
    _stray(masks, 3, pixels=15)
    assert autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks)).num_classes == 5
    assert _warnings(caplog) == [
        (
            "seg_folder: a class has very few of 5040 labelled pixels in the 5 masks (class 3: 15 pixels): "
            "stray mask values? (set them to ignore_index 255 to leave them out)"
        )
    ]


def test_masks_without_two_classes_say_what_they_hold(tmp_path):
    images, masks = _masks(tmp_path, top=255)  # 0, 1, 2 and the ignored 255
    for path in masks.iterdir():
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(path)
    with pytest.raises(
        autoprune.AutopruneError,
        match=r"^seg_folder: the 5 masks hold no class, only ignore_index 255: give masks whose pixels are "
        r"class indices$",
    ):
        autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks))
    for path in masks.iterdir():
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    with pytest.raises(autoprune.AutopruneError, match=r"the 5 masks hold class 0 alone besides ignore_index 255"):
        autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks))
    assert autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks), num_classes=2).num_classes == 2


def test_a_mask_of_another_size_than_its_image_is_counted_in_a_warning(tmp_path, caplog):
    images, masks = _masks(tmp_path)
    Image.new("RGB", (64, 48)).save(images / "scene1.png")
    autoprune.create_dataset("seg_folder", images=str(images), masks=str(masks), image_size=16)
    assert _warnings(caplog) == [
        (
            f"seg_folder: 1 of 5 masks in {str(masks)!r} are not the size of their image ('scene1.png' is 32x32, "
            "its image 64x48); both are resized to image_size"
        )
    ]


@pytest.mark.parametrize("dataset", ["coco_folder", "seg_folder"])
@pytest.mark.parametrize("value", [0.0, 1.0, "0.2"])
def test_val_fraction_is_checked_by_name(tmp_path, dataset, value):
    if dataset == "coco_folder":
        folder, annotations = _coco(tmp_path)
        params = {"images": str(folder), "annotations": str(annotations)}
    else:
        images, masks = _masks(tmp_path)
        params = {"images": str(images), "masks": str(masks)}
    message = "must be float" if isinstance(value, str) else f"{dataset} val_fraction must be a number between 0 and 1"
    with pytest.raises(autoprune.AutopruneError, match=message):
        autoprune.create_dataset(dataset, **params, val_fraction=value)


def _bad_coco_image(tmp_path):
    folder, annotations = _coco(tmp_path)
    _spoil(folder, ["3.jpg", "5.jpg"])
    return "coco_folder", "small_detector", {"images": str(folder), "annotations": str(annotations), "image_size": 32}


def _coco_without_annotations(tmp_path):
    folder, annotations = _coco(tmp_path, annotations=[])
    return "coco_folder", "small_detector", {"images": str(folder), "annotations": str(annotations), "image_size": 32}


def _sparse_masks(tmp_path):
    images, masks = _masks(tmp_path)
    _stray(masks, 200)
    return "seg_folder", "small_segmenter", {"images": str(images), "masks": str(masks), "image_size": 16}


def _ignored_masks(tmp_path):
    images, masks = _masks(tmp_path, top=255)
    for path in masks.iterdir():
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(path)
    return "seg_folder", "small_segmenter", {"images": str(images), "masks": str(masks), "image_size": 16}


def _bad_seg_image(tmp_path):
    images, masks = _masks(tmp_path)
    _spoil(images, ["scene1.png", "scene4.png", "scene2.png"])
    return "seg_folder", "small_segmenter", {"images": str(images), "masks": str(masks), "image_size": 16}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_bad_coco_image, "coco_folder: 2 of 6 images in"),
        (_coco_without_annotations, "has 0 annotations in 6 images"),
        (_bad_seg_image, "seg_folder: 3 of 5 images in"),
        (_sparse_masks, "give num_classes (at least 201)"),
        (_ignored_masks, "the 5 masks hold no class, only ignore_index 255"),
    ],
    ids=["unreadable-coco-image", "coco-without-annotations", "unreadable-seg-image", "sparse-masks", "all-ignored"],
)
def test_bad_data_in_a_study_is_one_line_and_exit_2_before_the_baseline_is_trained(
    tmp_path, monkeypatch, capsys, make, message
):
    from autoprune import baseline

    def no_training(*args, **kwargs):
        raise AssertionError("the baseline was trained before the bad data was refused")

    monkeypatch.setattr(baseline, "train", no_training)
    dataset, model, params = make(tmp_path)
    study = write_study_file(
        tmp_path / "s.toml", model={"name": model}, dataset={"name": dataset, "params": params}, train={"epochs": 1}
    )
    capsys.readouterr()
    assert cli.main(["search", str(study), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("autoprune: error: ") and message in err, err
    assert not list(tmp_path.rglob("baseline-*.pt"))


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
