"""The built-in tasks: classification (top-1 accuracy), detection (COCO mAP) and segmentation (mean IoU)."""

from __future__ import annotations

import autoprune
from autoprune.tasks import Detection, Segmentation, Task


@autoprune.hookimpl
def autoprune_register_tasks(register):
    register("classification", Task, description="class labels, scored by top-1 accuracy (points)")
    register(
        "detection",
        Detection,
        description="boxes in torchvision's format, scored by COCO mAP@[.5:.95] (points; mAP@.5 recorded)",
    )
    register("segmentation", Segmentation, description="per-pixel labels, scored by mean IoU over the classes (points)")
