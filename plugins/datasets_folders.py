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

Both read every annotation (and every mask) when built, and the header of every
image (PIL's ``Image.open`` and ``verify``, no decoding), so a malformed file, an
unreadable image or data that would train nothing (no boxes, no classes) is a
one-line error before any training; what is left out (crowd, empty or outside
boxes) is counted in one warning line. Images are decoded when a sample is read,
so a file cut short after a sound header is found then. Images become
``(3, H, W)`` floats in [0, 1] at ``image_size`` (boxes scaled with them; masks
resized by nearest neighbour). The validation split is carved from the training
images with a fixed seed; ``test_*`` give a test split.
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
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
#: A class with fewer labelled pixels than this share of all of them, or than :data:`FEW_PIXELS`, is
#: named in a warning: most likely a stray mask value (an antialiased edge, a mask saved as JPEG).
RARE_SHARE = 1e-4
FEW_PIXELS = 16
_logger = logging.getLogger("autoprune")
#: The errors PIL raises on a file that is not an image it can read (UnidentifiedImageError is an OSError).
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError)


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


def _fraction(name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise AutopruneError(f"{name} {key} must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def _header(path: Path) -> tuple[int, int] | str:
    """The ``(width, height)`` of the image at ``path`` from its header, or why it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()  # PNG: every chunk's checksum; JPEG: the header alone
    except Image.UnidentifiedImageError:
        return "not an image PIL can read"
    except (*_UNREADABLE, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__
    return size


def check_images(name: str, paths: list[Path], folder: Path) -> list[tuple[int, int]]:
    """The ``(width, height)`` of every image in ``paths``, read from its header (no decoding, several files
    at a time); one error naming the unreadable ones and how many they are."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        headers = list(pool.map(_header, paths))
    bad = [(path, why) for path, why in zip(paths, headers) if isinstance(why, str)]
    if bad:
        shown = ", ".join(f"{path.name!r} ({why})" for path, why in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise AutopruneError(
            f"{name}: {len(bad)} of {len(paths)} images in {str(folder)!r} cannot be read as images: {shown}{more}"
        )
    return headers  # type: ignore[return-value]


def _read_image(path: Path, height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """The image at ``path`` as RGB floats in [0, 1] resized to ``height`` x ``width``, and its size before."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            original = image.size
            image = image.convert("RGB").resize((width, height), Image.BILINEAR)
    except (*_UNREADABLE, Image.DecompressionBombError) as exc:
        raise AutopruneError(f"cannot read image {str(path)!r}: {exc}") from None
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), original


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


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
    category-id-to-label map (given, to read a test file with the training file's labels).

    Every listed image's header is read (its size clips the boxes). Crowd annotations, boxes with
    width or height <= 0 and boxes wholly outside their image are left out, and boxes partly outside
    are clipped to it, as torchvision's detection references do; one warning line counts them. A file
    left with no box at all is refused: a detector would learn nothing and score an mAP of 0.
    """
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
            and all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in v)
        )

    boxes = []
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
        bbox = field("annotations", i, entry, "bbox", is_box, "[x, y, width, height] of finite numbers")
        boxes.append((image_id, categories[category], bbox, bool(entry.get("iscrowd", 0))))
    sizes = dict(
        zip(records, check_images(name, [images / r["file_name"] for r in records.values()], images), strict=True)
    )
    crowd = empty = outside = clipped = 0
    for image_id, label, (x, y, w, h), is_crowd in boxes:
        if is_crowd:
            crowd += 1
            continue
        if w <= 0 or h <= 0:
            empty += 1
            continue
        width, height = sizes[image_id]
        box = [max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)]
        if box[2] <= box[0] or box[3] <= box[1]:
            outside += 1
            continue
        clipped += box[0] - x >= 1 or box[1] - y >= 1 or x + w - box[2] >= 1 or y + h - box[3] >= 1
        records[image_id]["boxes"].append(box)
        records[image_id]["labels"].append(label)
    kept = len(boxes) - crowd - empty - outside
    reasons = [
        f"{crowd} crowd" if crowd else "",
        f"{empty} with width or height <= 0" if empty else "",
        f"{outside} outside {'its' if outside == 1 else 'their'} image" if outside else "",
    ]
    reasons = ", ".join(r for r in reasons if r)
    if not kept:
        raise AutopruneError(
            f"{where} has 0 annotations in {_count(len(records), 'image')}; a detector would learn nothing and "
            "score an mAP of 0: give a file with boxes"
            if not boxes
            else f"{where} has no usable box in {_count(len(records), 'image')}: all {len(boxes)} annotations "
            f"are left out ({reasons})"
        )
    parts = [f"dropped {len(boxes) - kept} of {len(boxes)} boxes ({reasons})" if reasons else ""]
    parts.append(f"clipped {clipped} partly outside {'its' if clipped == 1 else 'their'} image" if clipped else "")
    if reasons or clipped:
        _logger.warning("%s: %s", where, "; ".join(part for part in parts if part))
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
    val_fraction = _fraction("coco_folder", "val_fraction", val_fraction)
    if (test_images is None) != (test_annotations is None):
        raise AutopruneError(
            "coco_folder needs test_images and test_annotations together, got only "
            f"{'test_images' if test_annotations is None else 'test_annotations'}"
        )
    records, categories = read_coco("coco_folder", annotations, _folder("coco_folder", "images", images))
    test = None
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


def _histogram(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values in ``labels`` and how many pixels hold each (a bincount: faster than sorting the pixels)."""
    flat = labels.ravel()
    if not flat.size or flat.min() < 0 or flat.max() >= 1 << 16:
        return np.unique(flat, return_counts=True)
    counts = np.bincount(flat)
    values = np.flatnonzero(counts)
    return values, counts[values]


def pair_masks(
    name: str, images: Path, masks: Path, ignore_index: int
) -> tuple[list[tuple[Path, Path]], dict[int, int]]:
    """Every image's mask (same name without extension), and how many pixels of each class the masks hold
    (``ignore_index`` left out). Every image's header is read; a mask of another size than its image is
    counted in a warning line (both are resized to ``image_size``, so the labels may not fit the pixels)."""
    from PIL import Image

    found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise AutopruneError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) in {str(images)!r}")
    by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() == ".png"}
    pairs, pixels, other_size = [], {}, []
    for image in found:
        mask = by_stem.get(image.stem)
        if mask is None:
            raise AutopruneError(f"{name}: image {image.name!r} has no mask {image.stem + '.png'!r} in {str(masks)!r}")
        pairs.append((image, mask))
    sizes = check_images(name, found, images)
    for (_, mask), size in zip(pairs, sizes, strict=True):
        try:
            with Image.open(mask) as opened:
                if opened.mode not in ("L", "P", "I", "I;16"):
                    raise AutopruneError(
                        f"{name}: mask {str(mask)!r} is mode {opened.mode}; masks are single-channel "
                        "PNGs (L, P or I) of class indices"
                    )
                if opened.size != size:
                    other_size.append((mask, opened.size, size))
                values, counts = _histogram(np.asarray(opened))
        except _UNREADABLE as exc:
            raise AutopruneError(f"{name}: cannot read mask {str(mask)!r}: {exc}") from None
        for value, count in zip(values.tolist(), counts.tolist()):
            if value != ignore_index:
                pixels[value] = pixels.get(value, 0) + count
    if other_size:
        mask, (mw, mh), (iw, ih) = other_size[0]
        _logger.warning(
            "%s: %d of %d masks in %r are not the size of their image (%r is %dx%d, its image %dx%d); "
            "both are resized to image_size",
            name,
            len(other_size),
            len(pairs),
            str(masks),
            mask.name,
            mw,
            mh,
            iw,
            ih,
        )
    return pairs, pixels


def _classes(ids: list[int]) -> str:
    """Sorted class ids, runs of three or more shortened: ``0 to 18 and 200``."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts: list[str] = []
    for run in runs:
        parts += [f"{run[0]} to {run[-1]}"] if len(run) > 2 else [str(i) for i in run]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


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
    """Segmentation data of your own: images and single-channel PNG masks of class indices (``test_*`` for a test split).

    ``num_classes`` is inferred (the largest class plus one) only when the masks hold classes 0 to the
    largest without a gap; otherwise it must be given, so a stray value (one pixel of 200) does not
    silently make a 201-class model. A class with very few pixels is named in a warning line.
    """
    height, width = _size("seg_folder", image_size)
    val_fraction = _fraction("seg_folder", "val_fraction", val_fraction)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise AutopruneError(f"seg_folder ignore_index must be an integer, got {ignore_index!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise AutopruneError(f"seg_folder num_classes must be an integer >= 2, got {num_classes!r}")
    if (test_images is None) != (test_masks is None):
        raise AutopruneError(
            "seg_folder needs test_images and test_masks together, got only "
            f"{'test_images' if test_masks is None else 'test_masks'}"
        )
    pairs, pixels = pair_masks(
        "seg_folder", _folder("seg_folder", "images", images), _folder("seg_folder", "masks", masks), ignore_index
    )
    test_pairs = []
    if test_images is not None:
        test_pairs, test_pixels = pair_masks(
            "seg_folder",
            _folder("seg_folder", "test_images", test_images),
            _folder("seg_folder", "test_masks", test_masks),
            ignore_index,
        )
        for value, count in test_pixels.items():
            pixels[value] = pixels.get(value, 0) + count
    ids = sorted(pixels)
    total = sum(pixels.values())
    rare = [i for i in ids if pixels[i] < max(FEW_PIXELS, RARE_SHARE * total)]
    rare_note = ", ".join(f"class {i}: {_count(pixels[i], 'pixel')}" for i in rare[:3])
    where = _count(len(pairs) + len(test_pairs), "mask")
    if not ids:
        raise AutopruneError(
            f"seg_folder: the {where} hold no class, only ignore_index {ignore_index}: "
            "give masks whose pixels are class indices"
        )
    largest = ids[-1]
    if num_classes is None:
        if ids != list(range(largest + 1)):
            raise AutopruneError(
                f"seg_folder: the {where} hold classes {_classes(ids)}, not 0 to {largest} without a gap, so "
                f"num_classes is not inferred{f' ({rare_note})' if rare_note else ''}: give num_classes "
                f"(at least {largest + 1}), or set stray values to ignore_index {ignore_index}"
            )
        if largest == 0:
            raise AutopruneError(
                f"seg_folder: the {where} hold class 0 alone besides ignore_index {ignore_index}; segmentation "
                "needs 2 classes or more (give num_classes if the others are absent from these masks)"
            )
        num_classes = largest + 1
    if largest >= num_classes:
        raise AutopruneError(
            f"seg_folder: the masks hold class {largest}, but num_classes is {num_classes} "
            f"(classes 0 to {num_classes - 1}; ignore_index {ignore_index} is ignored)"
        )
    if rare:
        _logger.warning(
            "seg_folder: %s of %d labelled pixels in the %s (%s%s): stray mask values? "
            "(set them to ignore_index %d to leave them out)",
            "a class has very few" if len(rare) == 1 else f"{len(rare)} classes have very few",
            total,
            where,
            rare_note,
            f" and {len(rare) - 3} more" if len(rare) > 3 else "",
            ignore_index,
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
