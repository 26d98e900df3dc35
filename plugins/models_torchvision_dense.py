"""torchvision's detection and segmentation models, as ``torchvision/<name>``.

The factories build the model with random weights (``weights=None`` and
``weights_backbone=None``) by default; ``weights="DEFAULT"`` loads torchvision's
pretrained detector or segmenter (COCO classes: 91 for detection, 21 for
segmentation), ``weights_backbone="DEFAULT"`` an ImageNet backbone only, both
through torchvision's download. ``num_classes`` counts the background for
detectors, as torchvision does. Any other keyword goes to the torchvision
builder: ``min_size`` and ``max_size`` (the detectors resize every image to
them; small values keep CPU searches fast), ``trainable_backbone_layers``,
``aux_loss``.

Pruning keeps the class, box, mask and keypoint outputs at their width: the
engine traces the network without its post-processing
(:func:`autoprune.engine.call_network`), where those layers are the outputs.
Images have three channels (the detectors normalize with RGB statistics).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torchvision
from torch import nn

import autoprune

#: The number of classes of torchvision's pretrained weights.
PRETRAINED_CLASSES = {"detection": 91, "segmentation": 21}


def build(
    family: str,
    name: str,
    num_classes: int = 91,
    in_channels: int = 3,
    weights: Any = None,
    weights_backbone: Any = None,
    **params: Any,
) -> nn.Module:
    """Build torchvision's ``name`` (a ``family`` model: detection or segmentation) for ``num_classes``."""
    if in_channels != 3:
        raise autoprune.AutopruneError(
            f"torchvision/{name} takes RGB images (in_channels=3), got in_channels={in_channels}"
        )
    pretrained = PRETRAINED_CLASSES[family]
    if weights is not None and num_classes != pretrained:
        raise autoprune.AutopruneError(
            f"torchvision/{name} with weights={weights!r} has {pretrained} classes, got num_classes={num_classes}; "
            f"use weights_backbone={weights!r} for a pretrained backbone with {num_classes} classes"
        )
    sizes = {k: params.pop(k) for k in ("min_size", "max_size") if k in params}
    builder = torchvision.models.get_model_builder(name)
    model = builder(weights=weights, weights_backbone=weights_backbone, num_classes=num_classes, **params)
    transform = getattr(model, "transform", None)
    if sizes and transform is None:
        raise autoprune.AutopruneError(
            f"torchvision/{name} does not resize its inputs; min_size and max_size apply to detection models"
        )
    if sizes:  # set after building: SSD's builders fix the size themselves
        transform.min_size = (sizes.get("min_size", transform.min_size[0]),)
        transform.max_size = sizes.get("max_size", max(transform.max_size, transform.min_size[0]))
        if transform.fixed_size is not None:
            transform.fixed_size = (transform.min_size[0], transform.min_size[0])
    return model


@autoprune.hookimpl
def autoprune_register_models(register):
    for family, module in (
        ("detection", torchvision.models.detection),
        ("segmentation", torchvision.models.segmentation),
    ):
        for name in sorted(torchvision.models.list_models(module=module)):
            register(
                f"torchvision/{name}",
                partial(build, family, name),
                task=family,
                description=f"torchvision.models.{family}.{name} ({family}; weights=None unless weights= or "
                "weights_backbone= is given)",
            )
