"""YOLO detectors from the ultralytics package: ``ultralytics/yolov8n`` to ``-x`` and ``ultralytics/yolo11n`` to ``-x``.

YOLOv8 (Jocher, Chaurasia and Qiu, Ultralytics 2023) and YOLO11 (Jocher and Qiu,
Ultralytics 2024) are built from ultralytics' own YAML files, so nothing is
downloaded unless ``weights`` names a checkpoint. ultralytics is licensed under
AGPL-3.0: autoprune never requires or vendors it, and these models are available only
when it is installed (``pip install 'autoprune[ultralytics]'``); the package is
imported when one of them is built, never before, and that import leaves Pillow's
``Image.open`` as it was (ultralytics replaces it otherwise).

Each model takes and returns what torchvision's detectors do, so the ``detection``
task trains and scores it (COCO mAP) like any other detector and ``coco_folder`` data
feeds it: a list of RGB images in [0, 1], letterboxed to ``image_size`` (the longer side
scaled to it, the rest padded grey, as ultralytics' validation does); in eval mode
``[{"boxes", "scores", "labels"}]`` per image, in the image's pixels, decoded by
ultralytics' own head and non-maximum suppression; in training mode with targets, the
box, class and distribution-focal losses of ultralytics' own criterion (task-aligned
assignment). ``num_classes`` counts the background as torchvision's do: label 0 is never
predicted and the head has ``num_classes - 1`` class outputs.

For pruning, the network is traced without its decoding (:meth:`UltralyticsDetector.network_outputs`:
the head's box and class maps at every level), so the head's last layers are the model's
outputs and keep their width while the backbone, the neck and the head's inner layers
are pruned. The C2f, C3k2 and C2PSA blocks split one convolution's output in two halves
at run time, which Torch-Pruning's index mapping gets wrong (its own YOLOv8 example
rewrites C2f for this); here each such convolution becomes two convolutions holding the
same weights (:class:`TwoHalves`), an exact rewrite. The attention inside C2PSA reshapes
its channels by a fixed head count, so those channels are left unpruned and
``unprunable_groups`` names them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import autoprune

#: ultralytics' scales of each family (width and depth multipliers in its YAML files).
SCALES = ("n", "s", "m", "l", "x")
FAMILIES = {
    "yolov8": "YOLOv8 (Ultralytics 2023)",
    "yolo11": "YOLO11 (Ultralytics 2024)",
}
#: The grey that ultralytics' letterbox pads with.
PAD_VALUE = 114 / 255
#: The most candidate boxes (by score) that go into non-maximum suppression, as ultralytics' ``max_nms``.
MAX_CANDIDATES = 30000


class TwoHalves(nn.Module):
    """A block whose first convolution is split into its two halves, so no tensor is split at run time.

    ``C2f``/``C3k2``: ``cat([a, b, m1(b), m2(m1(b)), ...])`` into ``cv2``; ``C2PSA``:
    ``cv2(cat([a, m(b)]))``. ``a`` and ``b`` are what ``cv1``'s output halves were.
    """

    def __init__(self, block: nn.Module, chained: bool) -> None:
        super().__init__()
        first, second = _halves(block.cv1)
        self.cv0, self.cv1 = first, second
        self.cv2, self.m = block.cv2, block.m
        self.chained = chained
        for attr in ("f", "i", "type", "np"):  # where the block sits in ultralytics' layer list
            if hasattr(block, attr):
                setattr(self, attr, getattr(block, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        if self.chained:
            y.extend(m(y[-1]) for m in self.m)
        else:
            y[1] = self.m(y[1])
        return self.cv2(torch.cat(y, 1))


def _halves(conv: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Two copies of an ultralytics ``Conv`` (convolution, BatchNorm, activation), each with half its outputs."""
    half = conv.conv.out_channels // 2
    parts = []
    for rows in (slice(0, half), slice(half, None)):
        part = copy.deepcopy(conv)
        part.conv.weight = nn.Parameter(conv.conv.weight.detach()[rows].clone())
        part.conv.out_channels = half
        bn = part.bn
        bn.weight = nn.Parameter(conv.bn.weight.detach()[rows].clone())
        bn.bias = nn.Parameter(conv.bn.bias.detach()[rows].clone())
        bn.running_mean = conv.bn.running_mean[rows].clone()
        bn.running_var = conv.bn.running_var[rows].clone()
        bn.num_features = half
        parts.append(part)
    return parts[0], parts[1]


def _without_run_time_splits(net: nn.Module) -> None:
    """Replace every C2f, C3k2 and C2PSA block of ``net`` by its :class:`TwoHalves` equivalent, in place."""
    from ultralytics.nn.modules import block

    chained = (block.C2f, block.C3k2)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in chained:
                setattr(parent, name, TwoHalves(child, chained=True))
            elif type(child) is block.C2PSA:
                setattr(parent, name, TwoHalves(child, chained=False))


class UltralyticsDetector(nn.Module):
    """An ultralytics ``DetectionModel`` behind torchvision's detector interface (see the module's docstring)."""

    def __init__(
        self, net: nn.Module, image_size: int, score_thresh: float, iou_thresh: float, detections_per_img: int
    ) -> None:
        super().__init__()
        self.net = net
        self.image_size = image_size
        self.score_thresh = score_thresh
        self.iou_thresh = iou_thresh
        self.detections_per_img = detections_per_img

    def _letterboxed(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[Any]]:
        """The images as one batch of ``image_size`` squares, and each one's scale (traced as tensors when
        exported, as torchvision's detectors do, so an ONNX file takes any image size)."""
        batch, scales = [], []
        for image in images:
            if torch.jit.is_tracing():
                scale = self.image_size / torch._shape_as_tensor(image)[-2:].max().to(torch.float32)
            else:
                scale = self.image_size / max(image.shape[-2:])
            resized = F.interpolate(
                image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
            )[0]
            pad = (0, self.image_size - resized.shape[-1], 0, self.image_size - resized.shape[-2])
            batch.append(F.pad(resized, pad, value=PAD_VALUE))
            scales.append(scale)
        return torch.stack(batch), scales

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps the head reads (ultralytics' layer loop, stopped before the head)."""
        saved = []
        for layer in self.net.model[:-1]:
            if layer.f != -1:
                x = saved[layer.f] if isinstance(layer.f, int) else [x if j == -1 else saved[j] for j in layer.f]
            x = layer(x)
            saved.append(x if layer.i in self.net.save else None)
        return [x if j == -1 else saved[j] for j in self.net.model[-1].f]

    def network_outputs(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The head's box and class maps at every level, before decoding: what pruning traces and keeps."""
        x, _ = self._letterboxed(list(images))
        head = self.net.model[-1]
        feats = self._features(x)
        return [out for i, f in enumerate(feats) for out in (head.cv2[i](f), head.cv3[i](f))]

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        x, scales = self._letterboxed(list(images))
        if self.training:
            if targets is None:
                raise autoprune.AutopruneError("an ultralytics detector in training mode needs targets")
            return self._losses(x, scales, targets)
        predictions = self.net(x)
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions  # (N, 4 + classes, anchors)
        detections = []
        for prediction, scale, image in zip(predictions, scales, images, strict=True):
            boxes, scores, labels = self._suppressed(prediction)
            h, w = image.shape[-2:]
            boxes = boxes / scale
            boxes = torch.stack(
                [boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1
            )
            detections.append({"boxes": boxes, "scores": scores, "labels": labels + 1})
        return detections

    def _suppressed(self, prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's boxes (xyxy), scores and labels (from 0) after non-maximum suppression.

        The steps of ultralytics' ``non_max_suppression`` as its validator calls it (every class of a box
        above ``score_thresh`` a candidate, at most :data:`MAX_CANDIDATES` of them by score, class-aware
        suppression at ``iou_thresh``, the best ``detections_per_img`` kept), written with fixed-size
        operations and torchvision's ``batched_nms`` (which ultralytics calls too) so that it traces to
        ONNX; ultralytics' own function does not (its per-image branches are fixed at tracing).
        """
        from torchvision.ops import batched_nms, box_convert

        classes = self.net.model[-1].nc
        boxes = box_convert(prediction[:4].T, "cxcywh", "xyxy")
        scores = prediction[4 : 4 + classes].T.flatten()  # anchor-major: index = anchor * classes + class
        scores, index = scores.topk(min(MAX_CANDIDATES, scores.numel()))
        above = scores > self.score_thresh
        scores, index = scores[above], index[above]
        boxes, labels = boxes[index // classes], index % classes
        kept = batched_nms(boxes, scores, labels, self.iou_thresh)[: self.detections_per_img]
        return boxes[kept], scores[kept], labels[kept]

    def _losses(self, x: torch.Tensor, scales: list[float], targets: list[dict[str, torch.Tensor]]) -> dict:
        """ultralytics' criterion on torchvision-style targets (labels from 1, xyxy boxes in image pixels)."""
        index, classes, boxes = [], [], []
        for i, (target, scale) in enumerate(zip(targets, scales, strict=True)):
            xyxy = target["boxes"].to(x.device, torch.float32) * scale / self.image_size
            xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
            index.append(torch.full((len(xyxy),), i, device=x.device, dtype=torch.float32))
            classes.append(target["labels"].to(x.device, torch.float32) - 1)
            boxes.append(xywh)
        batch = {
            "img": x,
            "batch_idx": torch.cat(index),
            "cls": torch.cat(classes)[:, None],
            "bboxes": torch.cat(boxes),
        }
        total, _ = self.net.loss(batch, self.net(x))
        per_image = total / len(targets)  # ultralytics scales its losses by the batch size
        return {"box_loss": per_image[0], "cls_loss": per_image[1], "dfl_loss": per_image[2]}


def _import_ultralytics(name: str) -> None:
    """Import ultralytics for building ``name``, leaving ``PIL.Image.open`` as it was.

    Importing ultralytics replaces ``PIL.Image.open``, process-wide, by a function that answers any
    file Pillow cannot identify by trying to pip-install pi-heif: a corrupt image in a dataset would
    then fail with ``No module named 'pi_heif'`` (or a download) instead of the dataset's own message.
    The models here never open an image file, so the original is put back.
    """
    from PIL import Image

    pil_open = Image.open
    try:
        import ultralytics.nn.tasks  # noqa: F401
    except ImportError:
        raise autoprune.AutopruneError(
            f"{name} needs the ultralytics package (AGPL-3.0, an optional extra): pip install 'autoprune[ultralytics]'"
        ) from None
    finally:
        Image.open = pil_open


def yolo(
    family: str,
    scale: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 640,
    weights: str | None = None,
    score_thresh: float = 0.001,
    iou_thresh: float = 0.7,
    detections_per_img: int = 300,
) -> UltralyticsDetector:
    """A YOLO detector of ``family`` at ``scale`` built from ultralytics' YAML, with ``num_classes - 1`` classes."""
    name = f"ultralytics/{family}{scale}"
    _import_ultralytics(name)
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint, yaml_model_load

    if in_channels != 3:
        raise autoprune.AutopruneError(f"{name} takes RGB images (in_channels=3), got {in_channels}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise autoprune.AutopruneError(
            f"{name} needs num_classes >= 2 (the background and at least one class, as torchvision counts), "
            f"got {num_classes!r}"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32 or image_size % 32:
        raise autoprune.AutopruneError(
            f"{name} needs image_size, a multiple of 32 (its largest stride), got {image_size!r}"
        )
    config = yaml_model_load(f"{family}{scale}.yaml")
    config["nc"] = num_classes - 1  # set here, so ultralytics does not log that it overrides it
    net = DetectionModel(config, ch=3, nc=num_classes - 1, verbose=False)
    if weights is not None:
        if not isinstance(weights, str) or ("/" in weights and not Path(weights).is_file()):
            raise autoprune.AutopruneError(
                f"{name} weights must be a checkpoint file or an ultralytics release name such as "
                f"'{family}{scale}.pt', got {weights!r} (no such file)"
            )
        source, _ = load_checkpoint(weights)  # a local file, or an ultralytics release name it downloads
        net.load(source, verbose=False)
    net.args = get_cfg()  # the loss gains (box 7.5, cls 0.5, dfl 1.5) of ultralytics' default recipe
    _without_run_time_splits(net)
    return UltralyticsDetector(net, image_size, score_thresh, iou_thresh, detections_per_img)


def _factory(family: str, scale: str):
    def build(num_classes: int, **params: Any) -> UltralyticsDetector:
        return yolo(family, scale, num_classes, **params)

    build.__name__ = f"{family}{scale}"
    build.__doc__ = f"{FAMILIES[family]} at scale {scale!r}, from ultralytics' {family}{scale}.yaml."
    return build


@autoprune.hookimpl
def autoprune_register_models(register):
    for family, described in FAMILIES.items():
        for scale in SCALES:
            register(
                f"ultralytics/{family}{scale}",
                _factory(family, scale),
                task="detection",
                description=f"{described}, scale {scale}; needs the ultralytics extra (AGPL-3.0)",
            )
