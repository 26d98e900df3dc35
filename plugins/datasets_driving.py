"""driving_scenes: synthetic road scenes with boxes and per-pixel labels, generated from a seed.

Each image is drawn from its own generator, seeded by ``(seed, index)``, so a
scene is the same in any process and any order, and nothing is downloaded. A
scene has a sky and a ground at a random horizon, a road in perspective towards a
vanishing point with solid edge lines and a dashed centre line (white or yellow),
and up to ``max_objects`` objects placed at random depths: cars on the road,
pedestrians and traffic signs (a red disc, a yellow triangle or a blue square on a
pole) beside it, each scaled by its depth. Near objects are drawn last and hide
far ones; an object that is less than ``MIN_VISIBLE`` visible gets no box. A
global lighting factor, a cast shadow and sensor noise vary per image.

``task="detection"``: targets are ``{"boxes": (N, 4) float xyxy in pixels,
"labels": (N,) int64}`` as torchvision's detectors take them, labels
:data:`DETECTION_CLASSES` (0 is the background). ``task="segmentation"``: targets
are ``(H, W)`` int64 maps of :data:`SEGMENTATION_CLASSES`. Images are ``(3, H, W)``
floats in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

import autoprune
from autoprune.data import DataSplits
from autoprune.errors import AutopruneError

#: Detection labels; 0 is the background, as torchvision's detectors expect.
DETECTION_CLASSES = ("background", "car", "pedestrian", "sign")
#: Segmentation labels of every pixel.
SEGMENTATION_CLASSES = ("background", "road", "lane_marking", "car", "pedestrian", "sign")
TASKS = ("detection", "segmentation")
#: The fraction of an object's pixels that must stay visible for it to get a box.
MIN_VISIBLE = 0.3

_CAR, _PEDESTRIAN, _SIGN = 1, 2, 3
_SEG = {"road": 1, "lane": 2, _CAR: 3, _PEDESTRIAN: 4, _SIGN: 5}


class DrivingScenes(Dataset):
    """``count`` scenes of ``height`` x ``width``, scene ``i`` drawn from the generator of ``(seed, first + i)``."""

    def __init__(
        self, count: int, height: int, width: int, seed: int, task: str, first: int = 0, max_objects: int = 6
    ) -> None:
        self.count, self.height, self.width = count, height, width
        self.seed, self.task, self.first, self.max_objects = seed, task, first, max_objects
        self._scenes: dict[int, tuple] = {}  # drawn once (about 50 kB a scene at 128 x 128), reused every epoch

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if not 0 <= index < self.count:
            raise IndexError(f"scene {index} of {self.count}")
        if index not in self._scenes:
            self._scenes[index] = render_scene(
                np.random.default_rng([self.seed, self.first + index]), self.height, self.width, self.max_objects
            )
        image, labels, boxes, classes = self._scenes[index]
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        if self.task == "segmentation":
            return x, torch.from_numpy(labels).long()
        return x, {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(classes, dtype=torch.int64),
        }


def render_scene(rng: np.random.Generator, height: int, width: int, max_objects: int):
    """One scene: ``(image (H, W, 3) uint8, labels (H, W) uint8, boxes [[x0, y0, x1, y1]], classes)``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = rng.uniform(0.3, 0.45) * height
    image = np.empty((height, width, 3), np.float32)
    sky_top, sky_low = rng.uniform([40, 90, 150], [90, 140, 230]), rng.uniform([150, 180, 200], [210, 220, 250])
    mix = np.clip(yy / max(horizon, 1.0), 0, 1)[..., None]
    image[:] = sky_top * (1 - mix) + sky_low * mix
    ground = yy >= horizon
    image[ground] = rng.uniform([50, 90, 30], [120, 150, 80])  # grass or dry ground
    labels = np.zeros((height, width), np.uint8)

    # the road: a trapezoid from the bottom edge to a vanishing point on the horizon
    depth = np.clip((yy - horizon) / (height - horizon), 0, 1)  # 0 at the horizon, 1 at the bottom
    vanish_x = rng.uniform(0.4, 0.6) * width
    bottom_x, bottom_w = rng.uniform(0.35, 0.65) * width, rng.uniform(0.8, 1.3) * width

    def road_centre(t):
        return vanish_x + (bottom_x - vanish_x) * t

    def road_half(t):
        return bottom_w / 2 * t

    centre, half = road_centre(depth), road_half(depth)
    road = ground & (np.abs(xx - centre) <= half)
    image[road] = rng.uniform(70, 120) + rng.uniform(-8, 8, 3)
    labels[road] = _SEG["road"]
    paint = np.array([240, 240, 235]) if rng.random() < 0.6 else np.array([235, 200, 40])
    line = np.maximum(0.5, 0.02 * width * depth)
    phase, period = rng.uniform(0, 1), rng.uniform(3.0, 5.0)
    dashed = np.floor(period / np.maximum(depth, 1e-3) + phase) % 2 == 0
    centre_line = road & (np.abs(xx - centre) <= line / 2) & dashed
    edge_lines = road & (np.abs(np.abs(xx - centre) - half * 0.92) <= line / 2)
    for marking in (centre_line, edge_lines):
        image[marking] = paint
        labels[marking] = _SEG["lane"]

    # objects, far to near, so nearer ones hide farther ones
    instances = np.zeros((height, width), np.int32)
    drawn: list[tuple[int, int]] = []  # (class, pixels drawn)
    count = int(rng.integers(1, max_objects + 1))
    for t in np.sort(rng.uniform(0.15, 1.0, count)):
        kind = int(rng.choice([_CAR, _PEDESTRIAN, _SIGN], p=[0.5, 0.3, 0.2]))
        base = horizon + t * (height - horizon)  # the object stands on this row
        mask, colours = _draw_object(rng, kind, xx, yy, base, road_centre(t), road_half(t), width)
        if not mask.any():
            continue
        for part, colour in colours:
            image[part] = colour
        instances[mask] = len(drawn) + 1
        labels[mask] = _SEG[kind]
        drawn.append((kind, int(mask.sum())))

    boxes, classes = [], []
    for number, (kind, pixels) in enumerate(drawn, start=1):
        ys, xs = np.nonzero(instances == number)
        if len(ys) >= max(4, MIN_VISIBLE * pixels):
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
            classes.append(kind)

    # lighting: a global level, a cast shadow, sensor noise
    image *= rng.uniform(0.6, 1.25)
    if rng.random() < 0.5:
        slope, offset = rng.uniform(-1.5, 1.5), rng.uniform(0, width)
        image[(xx - offset - slope * (yy - horizon) > 0) & ground] *= rng.uniform(0.5, 0.8)
    image += rng.normal(0, rng.uniform(0, 8), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels, boxes, classes


def _draw_object(rng, kind, xx, yy, base, road_x, road_half, width):
    """An object's mask and its coloured parts ``[(mask, rgb)]``, standing on row ``base``."""
    scale = max(road_half * 2, 4.0)  # the road's width at this depth
    if kind == _CAR:
        w = scale * rng.uniform(0.25, 0.4)
        h = w * rng.uniform(0.55, 0.8)
        x = road_x + rng.uniform(-0.6, 0.6) * (road_half - w / 2)
        body = (np.abs(xx - x) <= w / 2) & (yy <= base) & (yy >= base - h)
        window = body & (yy < base - h * 0.55) & (np.abs(xx - x) <= w * 0.4)
        wheels = (
            (((xx - (x - w * 0.3)) / (w * 0.12)) ** 2 + ((yy - base) / (h * 0.18)) ** 2 <= 1)
            | (((xx - (x + w * 0.3)) / (w * 0.12)) ** 2 + ((yy - base) / (h * 0.18)) ** 2 <= 1)
        ) & (yy <= base)
        mask = body | wheels
        paint = rng.uniform(20, 235, 3)
        return mask, [(body, paint), (window, np.array([40, 50, 70])), (wheels, np.array([15, 15, 15]))]
    side = rng.choice([-1, 1])
    if kind == _PEDESTRIAN:
        h = scale * rng.uniform(0.18, 0.28)
        x = road_x + side * road_half * rng.uniform(0.85, 1.25)
        body = (((xx - x) / (h * 0.16)) ** 2 + ((yy - (base - h * 0.4)) / (h * 0.4)) ** 2) <= 1
        head = ((xx - x) ** 2 + (yy - (base - h * 0.88)) ** 2) <= (h * 0.12) ** 2
        return body | head, [(body, rng.uniform(20, 230, 3)), (head, rng.uniform([150, 100, 70], [240, 200, 170]))]
    h = scale * rng.uniform(0.3, 0.45)
    x = road_x + side * road_half * rng.uniform(1.1, 1.4)
    plate_r = max(h * 0.2, 1.5)
    pole = (np.abs(xx - x) <= max(h * 0.03, 0.5)) & (yy <= base) & (yy >= base - h)
    cy = base - h - plate_r * 0.5
    shape = int(rng.integers(3))
    if shape == 0:  # a red disc
        plate, colour = (xx - x) ** 2 + (yy - cy) ** 2 <= plate_r**2, np.array([210, 30, 30])
    elif shape == 1:  # a yellow triangle, point up
        plate = (yy <= cy + plate_r) & (yy >= cy - plate_r) & (np.abs(xx - x) <= (yy - (cy - plate_r)) * 0.58)
        colour = np.array([240, 200, 20])
    else:  # a blue square
        plate, colour = (np.abs(xx - x) <= plate_r) & (np.abs(yy - cy) <= plate_r), np.array([30, 70, 200])
    return pole | plate, [(pole, np.array([130, 130, 130])), (plate, colour)]


def driving_scenes(
    task: str = "detection",
    images: int = 1000,
    test_images: int = 200,
    size: int | list = 96,
    val_fraction: float = 0.2,
    max_objects: int = 6,
    seed: int = 0,
) -> DataSplits:
    """Synthetic road scenes (no download): ``images`` scenes split into train and val, ``test_images`` more."""
    if task not in TASKS:
        raise AutopruneError(f"driving_scenes task must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    for name, value, low in (
        ("images", images, 2),
        ("test_images", test_images, 0),
        ("max_objects", max_objects, 1),
        ("size", min(height, width), 16),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise AutopruneError(f"driving_scenes {name} must be an integer >= {low}, got {value!r}")
    if not 0.0 < val_fraction < 1.0:
        raise AutopruneError(f"driving_scenes val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    n_val = min(max(1, round(images * val_fraction)), images - 1)

    def part(count: int, first: int) -> DrivingScenes:
        return DrivingScenes(count, height, width, seed, task, first, max_objects)

    classes = DETECTION_CLASSES if task == "detection" else SEGMENTATION_CLASSES
    return DataSplits(
        train=part(images - n_val, 0),
        val=part(n_val, images - n_val),
        test=part(test_images, images) if test_images else None,
        num_classes=len(classes),
        input_shape=(3, height, width),
        task=task,
    )


@autoprune.hookimpl
def autoprune_register_datasets(register):
    register(
        "driving_scenes",
        driving_scenes,
        description="synthetic road scenes with boxes and masks (task=detection|segmentation; no download)",
    )
