"""Users' own labelled images: ``coco_folder`` for detection, ``seg_folder`` for segmentation.

``coco_folder``: a folder of images and a COCO "instances" annotation file (the
format of Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014):
``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "category_id",
"bbox": [x, y, width, height]}], "categories": [{"id", "name"}]}``. Category ids
become labels 1..K in the order of their ids (0 is the background, as
torchvision's detectors expect), so ``num_classes`` is K + 1. Crowd annotations
(``"iscrowd": 1``) and boxes without area are left out, as torchvision's detection
references do; images without annotations stay, as negatives.

``seg_folder``: a folder of images and a folder of masks, single-channel PNGs
(mode ``L``, ``P`` or ``I``) whose pixel values are class indices, paired by file
name without extension. Pixels equal to ``ignore_index`` count nowhere.

Both read every annotation (and every mask) when built, so a malformed file is a
one-line error before any training; images are decoded when a sample is read.
Images become ``(3, H, W)`` floats in [0, 1] at ``image_size`` (boxes scaled with
them; masks resized by nearest neighbour). The validation split is carved from
the training images with a fixed seed; ``test_*`` give a test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

import autoprune
from autoprune import DataSplits, split_train_val
from autoprune.errors import AutopruneError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: The label the segmentation task ignores; a mask's ``ignore_index`` is mapped to it.
IGNORED = 255


def _size(name: str, image_size: Any) -> tuple[int, int]:
    size = [image_size, image_size] if isinstance(image_size, int) and not isinstance(image_size, bool) else image_size
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 16 for n in size)
    ):
        raise AutopruneError(f"{name} image_size must be an integer >= 16 or [height, width], got {image_size!r}")
    return int(size[0]), int(size[1])


def _folder(name: str, what: str, path: Any) -> Path:
    if not isinstance(path, str) or not Path(path).is_dir():
        raise AutopruneError(f"{name} {what} must be an existing folder, got {path!r}")
    return Path(path)


def _read_image(path: Path, height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """The image at ``path`` as RGB floats in [0, 1] resized to ``height`` x ``width``, and its size before."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            original = image.size
            image = image.convert("RGB").resize((width, height), Image.BILINEAR)
    except OSError as exc:
        raise AutopruneError(f"cannot read image {str(path)!r}: {exc}") from None
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), original


class CocoImages(Dataset):
    """Images and their boxes, read from an annotation file checked by :func:`read_coco`."""

    def __init__(self, root: Path, records: list[dict], height: int, width: int) -> None:
        self.root, self.records, self.height, self.width = root, records, height, width

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        image, (w, h) = _read_image(self.root / record["file_name"], self.height, self.width)
        boxes = torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4)
        boxes *= torch.tensor([self.width / w, self.height / h] * 2)
        return image, {"boxes": boxes, "labels": torch.tensor(record["labels"], dtype=torch.int64)}


def read_coco(
    name: str, annotations: Any, images: Path, categories: dict[int, int] | None = None
) -> tuple[list[dict], dict[int, int]]:
    """Image records ``{"file_name", "boxes" (xyxy), "labels"}`` of a COCO instances file, and the
    category-id-to-label map (given, to read a test file with the training file's labels)."""
    if not isinstance(annotations, str) or not Path(annotations).is_file():
        raise AutopruneError(f"{name} annotations must be an existing COCO JSON file, got {annotations!r}")
    where = f"{name}: {annotations}"
    try:
        document = json.loads(Path(annotations).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AutopruneError(f"{where} is not JSON ({exc})") from None
    if not isinstance(document, dict) or not all(
        isinstance(document.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise AutopruneError(
            f"{where} is not a COCO instances file: it needs lists 'images', 'annotations' and 'categories'"
        )

    def field(kind: str, i: int, entry: Any, key: str, check, valid: str):
        value = entry.get(key) if isinstance(entry, dict) else None
        if not check(value):
            raise AutopruneError(f"{where}: {kind}[{i}] needs {key!r} as {valid}, got {value!r}")
        return value

    def is_id(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if categories is None:
        ids = sorted(
            {field("categories", i, c, "id", is_id, "an integer") for i, c in enumerate(document["categories"])}
        )
        if not ids:
            raise AutopruneError(f"{where} has no categories")
        categories = {cid: label for label, cid in enumerate(ids, start=1)}
    records: dict[int, dict] = {}
    for i, entry in enumerate(document["images"]):
        image_id = field("images", i, entry, "id", is_id, "an integer")
        file_name = field("images", i, entry, "file_name", lambda v: isinstance(v, str) and v, "a file name")
        if image_id in records:
            raise AutopruneError(f"{where}: images[{i}] repeats id {image_id}")
        if not (images / file_name).is_file():
            raise AutopruneError(f"{where}: images[{i}] names {file_name!r}, which is not in {str(images)!r}")
        records[image_id] = {"file_name": file_name, "boxes": [], "labels": []}
    if not records:
        raise AutopruneError(f"{where} lists no images")

    def is_box(v: Any) -> bool:
        return (
            isinstance(v, list)
            and len(v) == 4
            and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in v)
        )

    for i, entry in enumerate(document["annotations"]):
        image_id = field("annotations", i, entry, "image_id", lambda v: v in records, "the id of a listed image")
        category = field(
            "annotations",
            i,
            entry,
            "category_id",
            lambda v: v in categories,
            f"a category id ({', '.join(map(str, sorted(categories)))})",
        )
        x, y, w, h = field("annotations", i, entry, "bbox", is_box, "[x, y, width, height]")
        if entry.get("iscrowd", 0) or w <= 0 or h <= 0:
            continue
        records[image_id]["boxes"].append([x, y, x + w, y + h])
        records[image_id]["labels"].append(categories[category])
    return list(records.values()), categories


def coco_folder(
    images: str,
    annotations: str,
    image_size: int | list = 320,
    test_images: str | None = None,
    test_annotations: str | None = None,
    val_fraction: float = 0.1,
) -> DataSplits:
    """Detection data of your own: a folder of images and a COCO instances JSON (``test_*`` for a test split)."""
    height, width = _size("coco_folder", image_size)
    records, categories = read_coco("coco_folder", annotations, _folder("coco_folder", "images", images))
    test = None
    if (test_images is None) != (test_annotations is None):
        raise AutopruneError(
            "coco_folder needs test_images and test_annotations together, got only "
            f"{'test_images' if test_annotations is None else 'test_annotations'}"
        )
    if test_images is not None:
        test_root = _folder("coco_folder", "test_images", test_images)
        test = CocoImages(
            test_root, read_coco("coco_folder", test_annotations, test_root, categories)[0], height, width
        )
    train, val = split_train_val(CocoImages(Path(images), records, height, width), val_fraction)
    return DataSplits(
        train, val, test, num_classes=len(categories) + 1, input_shape=(3, height, width), task="detection"
    )


class MaskedImages(Dataset):
    """Images and their class-index masks, paired and checked by :func:`pair_masks`."""

    def __init__(self, pairs: list[tuple[Path, Path]], height: int, width: int, ignore_index: int) -> None:
        self.pairs, self.height, self.width, self.ignore_index = pairs, height, width, ignore_index

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        from PIL import Image

        image_path, mask_path = self.pairs[index]
        image, _ = _read_image(image_path, self.height, self.width)
        with Image.open(mask_path) as mask:
            labels = np.asarray(mask.resize((self.width, self.height), Image.NEAREST), dtype=np.int64)
        labels = np.where(labels == self.ignore_index, IGNORED, labels)
        return image, torch.from_numpy(labels)


def pair_masks(name: str, images: Path, masks: Path, ignore_index: int) -> tuple[list[tuple[Path, Path]], int]:
    """Every image's mask (same name without extension), and the largest class index in the masks."""
    from PIL import Image

    found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise AutopruneError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) in {str(images)!r}")
    by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() == ".png"}
    pairs, largest = [], -1
    for image in found:
        mask = by_stem.get(image.stem)
        if mask is None:
            raise AutopruneError(f"{name}: image {image.name!r} has no mask {image.stem + '.png'!r} in {str(masks)!r}")
        try:
            with Image.open(mask) as opened:
                if opened.mode not in ("L", "P", "I", "I;16"):
                    raise AutopruneError(
                        f"{name}: mask {str(mask)!r} is mode {opened.mode}; masks are single-channel "
                        "PNGs (L, P or I) of class indices"
                    )
                values = np.unique(np.asarray(opened))
        except OSError as exc:
            raise AutopruneError(f"{name}: cannot read mask {str(mask)!r}: {exc}") from None
        values = values[values != ignore_index]
        if len(values):
            largest = max(largest, int(values.max()))
        pairs.append((image, mask))
    return pairs, largest


def seg_folder(
    images: str,
    masks: str,
    num_classes: int | None = None,
    image_size: int | list = 256,
    ignore_index: int = IGNORED,
    test_images: str | None = None,
    test_masks: str | None = None,
    val_fraction: float = 0.1,
) -> DataSplits:
    """Segmentation data of your own: images and single-channel PNG masks of class indices (``test_*`` for a test split)."""
    height, width = _size("seg_folder", image_size)
    pairs, largest = pair_masks(
        "seg_folder", _folder("seg_folder", "images", images), _folder("seg_folder", "masks", masks), ignore_index
    )
    if (test_images is None) != (test_masks is None):
        raise AutopruneError(
            "seg_folder needs test_images and test_masks together, got only "
            f"{'test_images' if test_masks is None else 'test_masks'}"
        )
    test_pairs = []
    if test_images is not None:
        test_pairs, test_largest = pair_masks(
            "seg_folder",
            _folder("seg_folder", "test_images", test_images),
            _folder("seg_folder", "test_masks", test_masks),
            ignore_index,
        )
        largest = max(largest, test_largest)
    if num_classes is None:
        num_classes = largest + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise AutopruneError(f"seg_folder num_classes must be an integer >= 2, got {num_classes!r}")
    if largest >= num_classes:
        raise AutopruneError(
            f"seg_folder: the masks hold class {largest}, but num_classes is {num_classes} "
            f"(classes 0 to {num_classes - 1}; ignore_index {ignore_index} is ignored)"
        )
    train, val = split_train_val(MaskedImages(pairs, height, width, ignore_index), val_fraction)
    test = MaskedImages(test_pairs, height, width, ignore_index) if test_pairs else None
    return DataSplits(train, val, test, num_classes=num_classes, input_shape=(3, height, width), task="segmentation")


@autoprune.hookimpl
def autoprune_register_datasets(register):
    register(
        "coco_folder", coco_folder, description="your detection data: images=FOLDER, annotations=COCO instances JSON"
    )
    register(
        "seg_folder", seg_folder, description="your segmentation data: images=FOLDER, masks=FOLDER of class-index PNGs"
    )
